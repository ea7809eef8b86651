"""End-to-end sweeps on the local backend: failures recorded, resume, identical results per run, CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import yaml
from threadpoolctl import threadpool_info, threadpool_limits

from poisonlab.cli.main import main
from poisonlab.sweeps import COMPARABLE, ResultsLog, expand, run_sweep

SPEC = {
    "name": "tiny",
    "base": {"dataset": "digits", "model": "lr", "epochs": 2, "device": "cpu"},
    "cases": [{"attack_options.mode": "rule"}, {"attack_options.mode": "random"},
              {"attack_options.mode": "rule", "poisons": "/nonexistent/poisons.npz"}],  # fails at run time
    "grid": {"fraction": [0.1, 0.3]},
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    grid = expand(SPEC, "tiny.yaml")
    seen = []
    summary = run_sweep(grid, root / "two", workers=2, cache_dir=str(root / "cache"), progress=False, on_row=seen.append)
    return root, grid, summary, seen


def test_every_run_recorded_failures_do_not_stop_the_sweep(swept):
    root, grid, summary, seen = swept
    assert (summary.total, summary.ok, summary.failed, summary.skipped) == (6, 4, 2, 0)
    rows = list(ResultsLog(root / "two" / "results.jsonl").rows())
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in grid.runs) == sorted(r["run_id"] for r in seen)
    for r in rows:
        if r["config"]["poisons"]:
            assert r["status"] == "failed" and "DataError" in r["error"] and "does not exist" in r["error"]
        else:
            assert r["status"] == "ok" and set(r["fingerprints"]) == {"poisons", "victim_clean", "victim_poisoned"}
            assert (root / "two" / r["run_dir"] / "result.json").is_file()
    progress = json.loads((root / "two" / "progress.json").read_text())
    assert (progress["done"], progress["failed"], progress["remaining"], progress["running"]) == (4, 2, 0, {})


def test_rerun_skips_finished_and_retries_failed_on_request(swept):
    root, grid, _, _ = swept
    again = run_sweep(grid, root / "two", workers=2, cache_dir=str(root / "cache"), progress=False)
    assert (again.skipped, again.ok, again.failed) == (6, 0, 0)
    retry = run_sweep(grid, root / "two", workers=0, cache_dir=str(root / "cache"), retry_failed=True, progress=False)
    assert (retry.skipped, retry.ok, retry.failed) == (4, 0, 2)
    log = ResultsLog(root / "two" / "results.jsonl")
    assert len(list(log.rows())) == 8 and len(log.latest()) == 6


def test_cli_sweep_report_cache_and_identical_results(swept, tmp_path, capsys):
    root, grid, _, _ = swept
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out, cache = tmp_path / "one", tmp_path / "cache"
    assert main(["sweep", str(spec), "--dry-run", "--out", str(out)]) == 0
    assert "6 runs (0 finished, 6 to run)" in capsys.readouterr().out
    # in-process, a cold cache of its own: every run must match the 2-worker sweep bit for bit
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "0", "--quiet", "--cache-dir", str(cache)]) == 1
    two = ResultsLog(root / "two" / "results.jsonl").latest()
    one = ResultsLog(out / "results.jsonl").latest()
    assert set(one) == set(two)
    for rid, row in one.items():
        assert row["status"] == two[rid]["status"]
        if row["status"] == "ok":
            assert row["fingerprints"] == two[rid]["fingerprints"]
            assert {k: row["result"][k] for k in COMPARABLE} == {k: two[rid]["result"][k] for k in COMPARABLE}
    capsys.readouterr()
    assert main(["report", str(out / "results.jsonl"), "--plot", str(tmp_path / "fig")]) == 0
    text = capsys.readouterr().out
    assert "label_flip[mode=random]" in text and "ε_d=0.3: acc / drop (%)" in text and "2 failed run(s)" in text
    for name in ("drop_vs_fraction.png", "transition.png", "poison_grids.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 10_000
    assert main(["report", str(out), "--format", "latex", "--rows", "model", "--cols", "attack"]) == 0
    assert r"\begin{tabular}" in capsys.readouterr().out
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    assert "victim_clean" in capsys.readouterr().out  # one clean victim: 2 modes x 2 fractions share it
    from poisonlab.cache import ArtifactCache

    store = ArtifactCache(cache)
    assert len(store.entries("victim_clean")) == 1  # one clean victim: 2 modes x 2 fractions share it
    n = len(store.entries("victim_clean")) + len(store.entries("victim_poisoned"))  # + each ok run's retrained victim
    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert f"removed {n} cache entries" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing.jsonl")]) == 2


@dataclass(frozen=True)
class _BlasThreadsJob:
    """A Job that records how many threads numpy's BLAS would use while it runs."""

    out: str | None = None
    cache_dir: str | None = None

    def to_dict(self) -> dict:
        return {"job": "blas-threads"}

    def label(self) -> str:
        return "blas-threads"

    def execute(self, on_stage) -> dict:
        return {"blas_threads": [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]}


def test_a_run_caps_numpys_blas_at_its_threads_and_restores_it():
    """Two workers whose BLAS pools each take every core spin against each other (an SVD 18x slower)."""
    from poisonlab.sweeps.execute import execute_run

    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    if not blas:
        pytest.skip("numpy has no BLAS pool threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        row = execute_run("r", _BlasThreadsJob(), threads=1)
        after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert row["status"] == "ok", row.get("error")
    assert row["result"]["blas_threads"] and set(row["result"]["blas_threads"]) == {1}
    assert set(after) == {2}
