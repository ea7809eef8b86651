"""The defend stage of the protocol, `poisonlab run --defense`, and `poisonlab transfer`, on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from poisonlab.cli.main import main
from poisonlab.data import poison_count
from poisonlab.errors import ConfigError
from poisonlab.protocol import RunSpec, run_protocol
from poisonlab.protocol.defend import detection_metrics


def test_detection_metrics_known_values():
    is_poison = torch.tensor([0, 0, 0, 1, 1, 0, 1, 0], dtype=torch.bool)
    scores = torch.tensor([0.1, 0.2, 0.9, 0.8, 0.7, 0.0, 0.3, 0.4], dtype=torch.float64)
    keep = torch.tensor([1, 1, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    m = detection_metrics(is_poison, scores, keep)
    assert m["n_removed"] == 3 and m["n_poison_removed"] == 2
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    # pairs (poison, clean) ordered correctly: poisons .8 .7 .3 vs clean .1 .2 .9 0 .4 -> 4+4+3 of 15
    assert m["roc_auc"] == pytest.approx(11 / 15)
    none = detection_metrics(is_poison, scores, torch.ones(8, dtype=torch.bool))
    assert none["precision"] is None and none["recall"] == 0.0 and none["n_removed"] == 0


def test_bad_defense_fails_before_any_work(tmp_path):
    with pytest.raises(ConfigError):
        run_protocol(RunSpec(defense="nope", out=str(tmp_path / "x")), progress=False, log=lambda _m: None)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError):
        RunSpec(defense_options=[1])  # type: ignore[arg-type]


def test_cli_run_defense_reuses_poisons(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["run", "--epochs", "2", "--fraction", "0.05", "--out", a, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", "--epochs", "2", "--fraction", "0.05", "--out", b, "--quiet", "--poisons", a,
                 "--defense", "loss", "-D", "fraction=0.05", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["defense"] == "loss"
    res = json.loads((tmp_path / "b" / "result.json").read_text())
    first = json.loads((tmp_path / "a" / "result.json").read_text())
    assert res["poisoned_accuracy"] == first["poisoned_accuracy"]  # same poisons, same retrain
    assert res["detection"]["n_removed"] == poison_count(0.05, res["n_train"] + res["n_poison"])
    assert main(["run", "--defense", "nope", "--quiet"]) == 2
    assert main(["run", "--defense", "loss", "-D", "bogus=1", "--quiet"]) == 2


def test_transfer_matrix(tmp_path, capsys):
    assert main(["transfer", "--surrogates", "lr,nn", "--targets", "lr,nn", "--epochs", "1", "--fraction", "0.05",
                 "-M", "nn:hidden=[16]", "--out", str(tmp_path / "t"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    drops = res["accuracy_drop"]
    # label flip ignores the surrogate: identical poisons, so both rows are equal
    assert drops["lr"] == drops["nn"]
    white = json.loads((tmp_path / "t" / "surrogate-nn" / "result.json").read_text())
    assert drops["nn"]["nn"] == white["accuracy_drop"] and white["config"]["model_options"] == {"hidden": [16]}
    assert json.loads((tmp_path / "t" / "transfer.json").read_text())["targets"] == ["lr", "nn"]
    assert main(["transfer", "--surrogates", "lr", "--targets", "nope", "--quiet"]) == 2
    assert main(["transfer", "--surrogates", "lr", "--targets", "lr", "-M", "cnn:channels=[2,2]", "--quiet"]) == 2


def test_defend_stage_and_saved_run(tmp_path):
    """The in-run defend stage (result keys, artifacts) and judging the finished run from its
    artifacts give the same numbers."""
    from poisonlab.defenses import build_defense
    from poisonlab.protocol.defend import defend_saved_run

    quiet = {"progress": False, "log": lambda _m: None}
    base = run_protocol(RunSpec(epochs=2, fraction=0.05, out=str(tmp_path / "base")), **quiet)
    res = run_protocol(RunSpec(epochs=2, fraction=0.05, defense="knn", defense_options={"k": 5},
                                 out=str(tmp_path / "r")), **quiet)
    dfn = res.defended
    assert dfn is not None and base.defended is None
    n_total = res.n_train + res.n_poison
    assert dfn.n_removed == poison_count(0.03, n_total)
    for value in (dfn.precision, dfn.recall, dfn.roc_auc):
        assert value is not None and 0.0 <= value <= 1.0
    assert dfn.defended_drop == pytest.approx(res.clean_accuracy - dfn.defended_accuracy)
    assert dfn.recall == pytest.approx(dfn.n_poison_removed / res.n_poison)
    assert dfn.scores is not None and dfn.scores.shape == (n_total,) and dfn.poisoned_accuracy == res.poisoned_accuracy
    with np.load(tmp_path / "r" / "defense_scores.npz", allow_pickle=False) as z:
        assert z["scores"].shape == (n_total,) and int(z["is_poison"].sum()) == res.n_poison
        assert int((~z["keep"]).sum()) == dfn.n_removed
        assert np.array_equal(z["scores"], dfn.scores.numpy())
    assert (tmp_path / "r" / "victim_defended.safetensors").is_file()
    stored = json.loads((tmp_path / "r" / "result.json").read_text())
    assert stored["defense"] == "knn" and stored["defense_options"]["k"] == 5
    assert stored["detection"] == dfn.detection and stored["defense_seconds"] == dfn.seconds

    saved = defend_saved_run(tmp_path / "base", build_defense("knn", {"k": 5}), out=tmp_path / "base" / "knn")
    assert saved.defended_accuracy == dfn.defended_accuracy
    assert saved.detection == dfn.detection
    assert saved.defended_drop == pytest.approx(base.clean_accuracy - saved.defended_accuracy)
    on_disk = json.loads((tmp_path / "base" / "knn" / "defense.json").read_text())
    assert on_disk == {**saved.to_dict(), "run": str(tmp_path / "base"), "accuracy_drop": base.accuracy_drop}
