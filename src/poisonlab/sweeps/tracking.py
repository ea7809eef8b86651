"""Optional MLflow logging of a sweep's finished runs (``poisonlab sweep --mlflow URI``).

The coordinator logs each row right after it is appended to ``results.jsonl`` (so workers,
local or on Ray, never talk to the tracking server): the config as parameters (options
flattened as ``attack_options.mode``), the metrics, tags ``poisonlab.run_id`` / ``status`` /
``error``, and the run's ``result.json`` and ``poisons.png`` as artifacts when they exist.
``results.jsonl`` stays the source of truth: a coordinator killed between the append and the
logging leaves that one run out of MLflow (re-log it with :func:`log_rows`).
Use a database store, e.g. ``--mlflow sqlite:///mlflow.db`` (MLflow 3 refuses ``./mlruns`` file
stores unless ``MLFLOW_ALLOW_FILE_STORE=true``) or a server ``http://host:5000``; with a local
store, artifacts go to ``<sweep dir>/mlartifacts``. Needs ``pip install "poisonlab[mlflow]"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ..errors import PoisonlabError

METRICS = ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "attack_seconds", "total_seconds", "n_poison",
           "max_perturbation", "mean_perturbation")


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in sorted(config.items()):
        if isinstance(v, dict):
            for ik, iv in sorted(v.items()):
                out[f"{k}.{ik}"] = str(iv)
        elif v is not None and k not in ("out", "cache_dir"):
            out[k] = str(v)
    return out


class MlflowLogger:
    """Log sweep rows as MLflow runs in experiment ``experiment`` at ``uri``."""

    def __init__(self, uri: str, experiment: str, sweep_dir: str | Path | None = None) -> None:
        try:
            import mlflow
        except ImportError:
            raise PoisonlabError('--mlflow needs MLflow: pip install "poisonlab[mlflow]"') from None
        self.mlflow = mlflow
        try:
            mlflow.set_tracking_uri(uri)
            local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
            if local and sweep_dir is not None and mlflow.get_experiment_by_name(experiment) is None:
                # a local store: keep the artifacts beside the sweep, not in the current directory
                mlflow.create_experiment(experiment, artifact_location=(Path(sweep_dir).resolve() / "mlartifacts").as_uri())
            mlflow.set_experiment(experiment)
        except Exception as exc:
            raise PoisonlabError(f"--mlflow {uri}: cannot use this tracking store ({type(exc).__name__}: {exc})") from None

    def log_row(self, row: dict[str, Any], sweep_dir: str | Path) -> None:
        mlflow = self.mlflow
        tags = {"poisonlab.run_id": row["run_id"], "poisonlab.status": row["status"]}
        if row.get("error"):
            tags["poisonlab.error"] = str(row["error"])[:4000]
        with mlflow.start_run(run_name=row.get("label") or row["run_id"], tags=tags):
            mlflow.log_params(flat_params(row.get("config") or {}))
            result = row.get("result") or {}
            metrics = {m: float(result[m]) for m in METRICS if isinstance(result.get(m), (int, float))}
            if metrics:
                mlflow.log_metrics(metrics)
            run_dir = Path(sweep_dir) / row.get("run_dir", f"runs/{row['run_id']}")
            for name in ("result.json", "poisons.png"):
                if (run_dir / name).is_file():
                    mlflow.log_artifact(str(run_dir / name))


def log_rows(uri: str, experiment: str, rows: Iterable[dict[str, Any]], sweep_dir: str | Path) -> int:
    logger = MlflowLogger(uri, experiment, sweep_dir)
    n = 0
    for row in rows:
        logger.log_row(row, sweep_dir)
        n += 1
    return n
