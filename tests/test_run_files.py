"""The protocol computes, its caller writes and prints (issue 27): ``run_experiment`` returns the
poisons and models in its RunResult and writes no file, prints nothing; ``write_run`` writes a run's
folder and ``run_messages`` turns the run's events into the lines ``poisonlab run`` shows."""

import pytest
import torch

from poisonlab.attacks import build_attack
from poisonlab.defenses import build_defense
from poisonlab.errors import DataError
from poisonlab.protocol import RunResult, RunSpec, prepare, run_experiment, write_run
from poisonlab.protocol.run_log import MESSAGES, run_messages


def _run(tmp_path, monkeypatch, events):
    monkeypatch.chdir(tmp_path)  # any stray file would land here
    exp, spec = prepare(RunSpec(dataset="digits", model="lr", epochs=2, device="cpu"))
    result = run_experiment(exp, spec, build_attack("label_flip", {}), 0.05, seed=0, defense=build_defense("loss", {}),
                            progress=False, report=lambda e, v: events.append((e, dict(v))))
    return exp, result


def test_the_protocol_writes_and_prints_nothing_and_keeps_its_objects(tmp_path, monkeypatch, capsys):
    events = []
    exp, result = _run(tmp_path, monkeypatch, events)
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr() == ("", "")
    assert result.artifacts == {} and result.config["out"] is None
    assert len(result.poisons) == result.n_poison
    x = exp.test.x[:50]
    with torch.no_grad():  # the models in the result are the ones the accuracies were measured on
        assert not torch.equal(result.clean_model(x), result.poisoned_model(x))
    assert result.defended is not None and result.defended.model is not None
    assert [e for e, _ in events] == ["start", "pretrain", "clean_accuracy", "attack", "retrain", "poisoned_accuracy",
                                      "defense", "defended"]
    assert dict(events)["clean_accuracy"]["accuracy"] == result.clean_accuracy
    lines = []
    report = run_messages(lines.append)
    for e, v in events:
        report(e, v)
    assert lines[0].startswith("[poisonlab] digits: |D_tr|=") and f"-> {result.n_poison} poisons" in lines[0]
    assert f"acc2 = {result.poisoned_accuracy:.2f} %" in lines[5]
    assert set(e for e, _ in events) <= set(MESSAGES)


def test_write_run_writes_the_folder_the_record_names(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    exp, result = _run(tmp_path / "cwd", monkeypatch, [])
    written = write_run(tmp_path / "run", result, exp.train)
    assert written.config["out"] == str(tmp_path / "run")
    for name in written.artifacts.values():
        assert (tmp_path / "run" / name).is_file(), name
    assert {"poisons", "clean_model", "poisoned_model", "defense_scores", "defended_model"} <= set(written.artifacts)
    assert RunResult.load(tmp_path / "run").to_dict() == written.to_dict()
    assert written.poisoned_accuracy == result.poisoned_accuracy
    with pytest.raises(DataError, match="read from a record"):
        write_run(tmp_path / "again", RunResult.load(tmp_path / "run"), exp.train)
