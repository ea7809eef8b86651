"""``pl.disguise`` and ``pl.train_vae`` (issue 27): every argument checked before any VAE work, typed
frozen results whose ``to_dict()`` is what the commands write / print, and the commands agreeing with
the functions (tiny random AutoencoderKLs, a few steps: seconds on one CPU thread)."""

import dataclasses
import json

import pytest
import torch

pytest.importorskip("diffusers")

import poisonlab as pl  # noqa: E402
from poisonlab.cli.main import main  # noqa: E402
from poisonlab.data import load_dataset  # noqa: E402
from poisonlab.errors import ConfigError, DataError, UnknownNameError  # noqa: E402
from poisonlab.generative.images import read_image, write_image  # noqa: E402
from poisonlab.generative.vae import TinyVAEConfig, build_tiny_vae, load_vae, save_vae  # noqa: E402

SMALL = TinyVAEConfig(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=2, sample_size=32, mid_block_add_attention=False)


def _image(seed, c=3, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, c, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)


@pytest.fixture
def files(tmp_path):
    """A saved tiny VAE folder and two image files (a colour copyrighted one, a grey base one)."""
    save_vae(build_tiny_vae(SMALL, seed=0), tmp_path / "vae")
    write_image(tmp_path / "c.png", _image(30))
    write_image(tmp_path / "b.png", _image(31)[:, :1])
    return tmp_path


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Fail the test if a VAE is loaded or trained (the checks must come first)."""
    import poisonlab.generative.vae as vae_mod

    def forbidden(*_a, **_k):
        raise AssertionError("a VAE was loaded or trained before the arguments were checked")

    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path / "cache"))
    for fn in ("get_vae", "tiny_vae", "load_vae"):
        monkeypatch.setattr(vae_mod, fn, forbidden)


def test_disguise_checks_every_argument_before_any_work(files, no_work):
    (files / "blocker").write_text("a file where out wants a folder")
    ok = dict(copyrighted=files / "c.png", base=files / "b.png", vae=str(files / "vae"), out=files / "out")
    cases = [
        (dict(copyrighted=123), ConfigError, "--copyrighted must be a path"),
        (dict(base=files / "missing.png"), DataError, "--base: image file"),
        (dict(variant="invisible"), ConfigError, "unknown disguise variant"),
        (dict(variant=None), ConfigError, "--variant"),
        (dict(options=[("alpha", 1)]), ConfigError, "mapping"),
        (dict(options={"nope": 1}), ConfigError, "unknown option"),
        (dict(options={"steps": -1}), ConfigError, "steps"),
        (dict(size="32"), ConfigError, "--size must be an integer"),
        (dict(size=31), ConfigError, "downsampling factor 2"),  # SMALL: f = 2
        (dict(seed=-1), ConfigError, "--seed must be an integer >= 0"),
        (dict(progress="yes"), ConfigError, "progress"),
        (dict(device="tpu"), ConfigError, "--device"),
        (dict(vae=3), ConfigError, "--vae"),
        (dict(vae="tiny:no_such_data"), UnknownNameError, "unknown dataset 'no_such_data'"),
        (dict(out=files / "blocker"), ConfigError, "not a folder"),
        (dict(data_dir=5), ConfigError, "--data-dir"),
    ]
    for bad, error, needle in cases:
        with pytest.raises(error, match=needle):
            pl.disguise(**{**ok, **bad})
    assert not (files / "out").exists() and not (files / "cache").exists()
    with pytest.raises(AssertionError, match="before the arguments were checked"):  # valid: the VAE comes next
        pl.disguise(**ok)


def test_disguise_end_to_end_and_the_command_agrees(files, capsys):
    out = files / "api"
    res = pl.disguise(files / "c.png", files / "b.png", vae=str(files / "vae"), variant="evasive",
                      options={"alpha": 0.02, "steps": 12}, out=out, seed=3, progress=False)
    assert isinstance(res, pl.CraftedDisguise) and res.config.steps == 12 and res.config.alpha == 0.02
    assert res.variant == "evasive" and res.size == 32 and res.seed == 3 and res.directory == out
    assert res.metrics["latent_dist"] < res.metrics["latent_dist_base"]  # the disguise moved towards E(x_c)
    assert res.disguise.shape == res.reveal.shape == (1, 3, 32, 32)
    assert 0 <= float(res.disguise.min()) and float(res.disguise.max()) <= 1
    assert torch.allclose(read_image(out / "disguise.png"), res.disguise, atol=1 / 255)  # the PNG holds x_d
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(res.to_dict()))
    assert set(res.files) == {"disguise", "reveal", "grid"} and all(p.stat().st_size > 0 for p in res.files.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.size = 64  # type: ignore[misc]

    cli_out = files / "cli"
    assert main(["disguise", "--copyrighted", str(files / "c.png"), "--base", str(files / "b.png"), "--vae", str(files / "vae"),
                 "--variant", "evasive", "--alpha", "0.02", "--steps", "12", "--seed", "3", "--out", str(cli_out)]) == 0
    printed = capsys.readouterr().out
    assert f"latent_dist: {res.metrics['latent_dist']:.4f}" in printed and f"wrote {cli_out}/disguise.png" in printed
    rec = json.loads((cli_out / "metrics.json").read_text())
    mine = json.loads(json.dumps(res.to_dict()))
    for d in (rec, mine):
        del d["seconds"], d["files"]
    assert rec == mine  # the command is this call: same config, metrics and detector scores


def test_train_vae_checks_every_argument_before_any_work(tmp_path, no_work):
    (tmp_path / "file").write_text("not a folder")
    cases = [
        (dict(dataset="no_such_data"), UnknownNameError, "unknown dataset"),
        (dict(dataset=str(tmp_path / "missing.npz")), DataError, "does not exist"),
        (dict(dataset=7), ConfigError, "dataset"),
        (dict(preset="huge"), ConfigError, "huge"),
        (dict(epochs=-1), ConfigError, "epochs"),
        (dict(num_images=0), ConfigError, "num_images"),
        (dict(device="tpu"), ConfigError, "device"),
        (dict(save=tmp_path / "file"), ConfigError, "save"),
        (dict(seed=-2), ConfigError, "seed"),
        (dict(retrain="yes"), ConfigError, "retrain"),
        (dict(data_dir=1.5), ConfigError, "data_dir"),
        (dict(progress=None), ConfigError, "progress"),
    ]
    for bad, error, needle in cases:
        with pytest.raises(error, match=needle):
            pl.train_vae(**{"dataset": "digits", **bad})
    assert not (tmp_path / "cache").exists()
    with pytest.raises(AssertionError, match="before the arguments were checked"):
        pl.train_vae("digits", preset="small", epochs=1, num_images=16)


def test_train_vae_trains_caches_saves_and_the_command_agrees(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path / "cache"))
    res = pl.train_vae("digits", preset="small", epochs=1, num_images=16, save=tmp_path / "saved", progress=False)
    assert isinstance(res, pl.TrainedVAE) and res.source.startswith("tiny:digits-")
    assert res.latent_shape == (4, 8, 8) and res.compression == pytest.approx(32 * 32 / (4 * 8 * 8))  # grey digits
    assert res.cache_dir == tmp_path / "cache" / "vae" and (res.cache_dir / res.source[len("tiny:"):]).is_dir()
    assert res.test_images == min(500, len(load_dataset("digits").test))
    assert 0 <= res.test_ssim_min <= res.test_ssim_mean <= 1
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(load_vae(tmp_path / "saved").encode(x), res.vae.encode(x))  # the copy is this VAE
    assert res.to_dict()["latent_shape"] == [4, 8, 8] and json.loads(json.dumps(res.to_dict()))["saved"] == str(tmp_path / "saved")

    import poisonlab.generative.vae as vae_mod

    def no_training(*_a, **_k):
        raise AssertionError("the cached VAE was trained again")

    monkeypatch.setattr(vae_mod, "train_vae", no_training)
    again = pl.train_vae("digits", preset="small", epochs=1, num_images=16, progress=False)  # from the cache
    assert again.source == res.source and again.saved is None
    assert (again.test_ssim_mean, again.scaling_factor) == pytest.approx((res.test_ssim_mean, res.scaling_factor))
    assert main(["vae", "--dataset", "digits", "--preset", "small", "--epochs", "1", "--num-images", "16"]) == 0
    printed = capsys.readouterr().out
    assert f"VAE {res.source} in {res.cache_dir}" in printed
    assert f"test reconstruction SSIM ({res.test_images} images): mean {res.test_ssim_mean:.4f}" in printed
