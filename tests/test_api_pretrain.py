"""``pl.pretrain_extractor`` (issue 27): every argument checked before any work, a typed frozen result
whose ``to_dict()`` is what ``poisonlab pretrain --json`` prints, the cache, and the command agreeing
with the function (SimCLR on 256 digits for one epoch: seconds on one CPU thread)."""

import dataclasses
import json

import pytest

import poisonlab as pl
from poisonlab.cli.main import main
from poisonlab.errors import ConfigError, DataError, UnknownNameError

TINY = {"dataset": "digits", "n_images": 256, "epochs": 1, "batch_size": 64, "encoder_options": {"channels": [4, 8]}}


def test_pretrain_checks_every_argument_before_any_work(tmp_path, monkeypatch):
    import poisonlab.pretrain.store as store

    def forbidden(*_a, **_k):
        raise AssertionError("an extractor was looked up or trained before the arguments were checked")

    monkeypatch.setattr(store, "get_extractor", forbidden)
    cases = [
        (dict(config=42), ConfigError, "PretrainConfig"),
        (dict(nope=1), ConfigError, "unknown option"),
        (dict(method="byol"), ConfigError, "method"),
        (dict(epochs=-1), ConfigError, "epochs"),
        (dict(dataset="no_such_data"), UnknownNameError, "unknown dataset"),
        (dict(dataset=str(tmp_path / "missing.npz")), DataError, "does not exist"),
        (dict(dataset=3), ConfigError, "dataset"),
        (dict(encoder="vit"), UnknownNameError, "vit"),
        (dict(device="tpu"), ConfigError, "tpu"),
        (dict(out=tmp_path), ConfigError, "is a directory"),
        (dict(data_dir=2), ConfigError, "data_dir"),
        (dict(force="yes"), ConfigError, "force"),
        (dict(progress=1), ConfigError, "progress"),
    ]
    for bad, error, needle in cases:
        kwargs = {"config": TINY, **bad}
        with pytest.raises(error, match=needle):
            pl.pretrain_extractor(kwargs.pop("config"), **kwargs)
    with pytest.raises(AssertionError, match="before the arguments were checked"):  # valid: the work comes next
        pl.pretrain_extractor(TINY)


def test_pretrain_trains_caches_and_the_command_agrees(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path / "cache"))
    res = pl.pretrain_extractor(TINY, progress=False)
    assert isinstance(res, pl.PretrainedExtractor) and res.cached is False
    cfg = pl.PretrainConfig.from_dict(TINY)
    assert res.key == cfg.key() and res.path == tmp_path / "cache" / "extractors" / f"{res.key}.safetensors"
    assert res.path.is_file() and res.seconds > 0 and res.metadata["n_images"] == 256
    assert res.metadata["method"] == "simclr" and len(res.metadata["report"]["loss_history"]) == 1
    assert res.to_dict() == {**res.metadata, "cached": False, "path": str(res.path)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.cached = True  # type: ignore[misc]

    # the same config, as a PretrainConfig or as keyword options: found in the cache, nothing trained
    import poisonlab.pretrain.store as store

    def no_training(*_a, **_k):
        raise AssertionError("the cached extractor was trained again")

    monkeypatch.setattr(store, "pretrain_encoder", no_training)
    for again in (pl.pretrain_extractor(cfg, progress=False), pl.pretrain_extractor(progress=False, **TINY)):
        assert again.cached is True and again.key == res.key and again.path == res.path
        assert again.metadata == res.metadata  # what the file holds is what the training returned
    assert main(["pretrain", "--dataset", "digits", "--n-images", "256", "--epochs", "1", "--batch-size", "64",
                 "-E", "channels=[4,8]", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps({**res.to_dict(), "cached": True}))

    # out: written there instead of the cache, under the same key
    monkeypatch.undo()
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path / "cache"))
    own = pl.pretrain_extractor(TINY, out=tmp_path / "mine.safetensors", epochs=1, progress=False)
    assert own.path == tmp_path / "mine.safetensors" and own.path.is_file() and own.key == res.key and not own.cached
