"""``poisonlab sweep --mlflow``: each finished run logged with params, metrics, status and artifacts."""

from __future__ import annotations

import pytest
import yaml

from poisonlab.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.needs_extra("mlflow")]  # MLflow import + sqlite schema setup: ~15 s CPU


def test_sweep_logs_every_row_to_mlflow(tmp_path):
    import mlflow

    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "mlf", "base": {"dataset": "digits", "model": "lr", "epochs": 1, "device": "cpu"},
        "cases": [{"attack_options.mode": "rule"}, {"poisons": "/nonexistent.npz"}], "grid": {"fraction": [0.1]}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["sweep", str(spec), "--out", str(tmp_path / "s"), "--workers", "0", "--quiet", "--no-cache", "--mlflow", uri])
    assert rc == 1  # one run failed
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["mlf"], output_format="list")
    assert len(runs) == 2
    by_status = {r.data.tags["poisonlab.status"]: r for r in runs}
    ok = by_status["ok"]
    assert ok.data.params["attack_options.mode"] == "rule" and ok.data.params["fraction"] == "0.1"
    assert set(ok.data.metrics) >= {"clean_accuracy", "poisoned_accuracy", "accuracy_drop"}
    client = mlflow.tracking.MlflowClient()
    assert {a.path for a in client.list_artifacts(ok.info.run_id)} == {"result.json", "poisons.png"}
    assert "DataError" in by_status["failed"].data.tags["poisonlab.error"]
    assert ok.info.artifact_uri.startswith((tmp_path / "s" / "mlartifacts").as_uri())
