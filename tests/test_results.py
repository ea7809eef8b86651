"""The typed results — ``pl.RunResult``, ``pl.DefenseResult``, ``pl.ThresholdResult``: ``to_dict()`` is
the record ``result.json`` holds, and ``from_dict`` reads records back, both those written now and
those written before the types existed (``tests/fixtures/records``: written by commit 2b075e0,
digits, ``lr`` for 3 epochs on the CPU, label flip at 5 %; the thresholds of a GradPC target)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import poisonlab as pl
from poisonlab.artifacts import json_default, load_poisons
from poisonlab.data import poison_count
from poisonlab.errors import DataError
from poisonlab.protocol.results import DEFENSE_KEYS, RUN_KEYS

FIXTURES = Path(__file__).parent / "fixtures" / "records"
RUN_FILES = sorted(FIXTURES.glob("*.result.json"))
THRESHOLD_FILES = sorted(FIXTURES.glob("threshold*.json"))
VICTIM = dict(epochs=3, device="cpu")


def _json(obj):
    """What a record becomes once written (write_json's conversions) and read back."""
    return json.loads(json.dumps(obj, default=json_default))


def test_the_fixtures_are_there():
    assert len(RUN_FILES) == 4 and len(THRESHOLD_FILES) == 3


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_an_old_result_json_reads_back_key_for_key(path):
    record = json.loads(path.read_text())
    r = pl.RunResult.from_dict(record)
    assert r.to_dict() == record and list(r.to_dict()) == list(record)  # same keys, same order
    assert r.accuracy_drop == record["accuracy_drop"] and r.out == record["config"]["out"]
    assert r.attack_options == record["config"]["attack_options"]
    assert (r.defended is None) == ("defense" not in record)
    if r.defended is not None:
        assert r.defended.defended_drop == record["defended_drop"] and r.defended.detection == record["detection"]
        assert r.defended.scores is None and r.defended.poisoned_accuracy == record["poisoned_accuracy"]
        with pytest.raises(DataError, match="no per-point scores"):
            r.defended.save_scores(Path("/nonexistent/defense_scores.npz"))


@pytest.mark.parametrize("path", THRESHOLD_FILES, ids=lambda p: p.name)
def test_an_old_threshold_report_reads_back_key_for_key(path):
    record = json.loads(path.read_text())
    t = pl.ThresholdResult.from_dict(record)
    assert t.to_dict() == record and list(t.to_dict()) == list(record)
    assert (t.fraction is None) == ("fraction_passes" not in record)


@pytest.mark.parametrize("fraction", [0.03, None])
def test_a_threshold_report_keeps_the_format(fraction):
    """``pl.threshold`` returns a ThresholdResult whose record has the keys (in order) the code
    returned before the types; without a fraction, no verdicts."""
    t = pl.threshold("digits", pl.victim("lr", **VICTIM), "gradpc", fraction=fraction, options={"eps_w": 0.3, "steps": 3})
    assert isinstance(t, pl.ThresholdResult) and t.fraction == fraction
    old = json.loads((FIXTURES / ("threshold_fraction.json" if fraction else "threshold.json")).read_text())
    record = t.to_dict()
    assert list(record) == list(old) and set(record["target_info"]) == set(old["target_info"])
    assert pl.ThresholdResult.from_dict(record).to_dict() == record
    assert pl.ThresholdResult.from_dict(_json(record)).to_dict() == _json(record)  # as printed by --json
    assert t.tau_box is not None and t.tau_gauge is not None and t.tau_box <= t.tau_gauge + 1e-12
    assert t.min_poisons_box == record["min_poisons_box"] and isinstance(t.min_poisons_box, int)
    if fraction is None:
        assert t.fraction_passes is None and "fraction_passes" not in record
    else:
        assert t.fraction_passes_gauge == (fraction >= t.tau_gauge) and t.n_poisons_at_fraction == poison_count(fraction, t.n_clean)


def test_a_run_is_its_result_json_and_keeps_the_format(tmp_path):
    """On a real digits run, plain and defended: result.json is ``to_dict()`` written, it reads back
    to an equal result, and its keys are the ones (in the order) the code wrote before the types."""
    v = pl.victim("lr", **VICTIM)
    plain = pl.run("digits", v, "label_flip", 0.05, out=tmp_path / "plain", progress=False)
    defended = pl.run("digits", v, "label_flip", 0.05, defense="loss", defense_options={"fraction": 0.05},
                      out=tmp_path / "defended", progress=False)
    assert isinstance(plain, pl.RunResult) and plain.defended is None and isinstance(defended.defended, pl.DefenseResult)
    for name, res in (("plain", plain), ("defended", defended)):
        stored = json.loads((tmp_path / name / "result.json").read_text())
        assert stored == _json(res.to_dict())
        assert pl.RunResult.from_dict(stored).to_dict() == stored
        assert pl.RunResult.load(tmp_path / name) == pl.RunResult.load(tmp_path / name / "result.json") == res
        old = json.loads((FIXTURES / f"api_{'run' if name == 'plain' else name}.result.json").read_text())
        assert list(stored) == list(old)  # the record's format has not moved
        assert {k: v for k, v in stored.items() if k in ("dataset", "model", "attack", "n_train", "n_poison")} == {
            k: v for k, v in old.items() if k in ("dataset", "model", "attack", "n_train", "n_poison")}
    assert list(defended.to_dict())[-len(DEFENSE_KEYS):] == list(DEFENSE_KEYS)
    assert list(plain.to_dict()) == list(RUN_KEYS)
    assert defended.poisoned_accuracy == plain.poisoned_accuracy  # the defense does not change the run
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.clean_accuracy = 0.0  # type: ignore[misc]


def test_pl_defend_and_the_defend_stage_are_one_computation(tmp_path):
    """``pl.defend`` on a run's poisons gives the numbers of that run's defend stage (one
    implementation): the same scores, kept set, detection and defended accuracy."""
    v = pl.victim("lr", **VICTIM)
    run = pl.run("digits", v, "label_flip", 0.05, defense="loss", defense_options={"fraction": 0.05},
                 out=tmp_path / "r", progress=False)
    alone = pl.defend("digits", load_poisons(tmp_path / "r" / "poisons.npz"), v, "loss", options={"fraction": 0.05})
    staged = run.defended
    assert staged is not None and staged.scores is not None and alone.scores is not None
    assert torch.equal(alone.scores, staged.scores) and torch.equal(alone.keep, staged.keep)
    assert alone.detection == staged.detection and alone.n_removed == round(0.05 * (run.n_train + run.n_poison))
    assert alone.defended_accuracy == staged.defended_accuracy and alone.poisoned_accuracy == run.poisoned_accuracy
    assert alone.options == staged.options == run.to_dict()["defense_options"]
    assert alone.clean_accuracy is None and alone.defended_drop is None  # pl.defend trains no clean victim
    assert staged.defended_drop == run.clean_accuracy - staged.defended_accuracy
    assert list(alone.to_dict()) == list(DEFENSE_KEYS) and alone.to_dict()["defended_drop"] is None
    alone.save_scores(tmp_path / "scores.npz")
    assert (tmp_path / "scores.npz").read_bytes() == (tmp_path / "r" / "defense_scores.npz").read_bytes()


def test_a_malformed_record_is_a_data_error(tmp_path):
    record = json.loads((FIXTURES / "api_defended.result.json").read_text())
    with pytest.raises(DataError, match="missing clean_accuracy"):
        pl.RunResult.from_dict({k: v for k, v in record.items() if k != "clean_accuracy"})
    with pytest.raises(DataError, match="unknown surprise"):
        pl.RunResult.from_dict({**record, "surprise": 1})
    with pytest.raises(DataError, match="missing defense_seconds"):  # a defense block is whole or absent
        pl.RunResult.from_dict({k: v for k, v in record.items() if k != "defense_seconds"})
    with pytest.raises(DataError, match="defense detection record: missing roc_auc"):
        pl.RunResult.from_dict({**record, "detection": {k: v for k, v in record["detection"].items() if k != "roc_auc"}})
    with pytest.raises(DataError, match="must be a mapping"):
        pl.RunResult.from_dict([1, 2])  # type: ignore[arg-type]
    threshold = json.loads((FIXTURES / "threshold_fraction.json").read_text())
    with pytest.raises(DataError, match="missing fraction_passes"):  # a checked fraction comes with its verdicts
        pl.ThresholdResult.from_dict({k: v for k, v in threshold.items() if k != "fraction_passes"})
    with pytest.raises(DataError, match="no run record"):
        pl.RunResult.load(tmp_path)
    (tmp_path / "result.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read the run record"):
        pl.RunResult.load(tmp_path)
