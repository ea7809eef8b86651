"""The Ray backend on a local Ray instance gives, run by run, the local backend's results.

Skipped when Ray is not installed (``pip install "poisonlab[ray]"``). Starting Ray takes
~10-30 s and ~1 GB of memory on a small machine, hence ``slow``.
"""

from __future__ import annotations

import pytest

from poisonlab.sweeps import COMPARABLE, ResultsLog, expand, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.needs_extra("ray")]

SPEC = {
    "name": "ray-tiny",
    "base": {"dataset": "digits", "model": "lr", "epochs": 2, "device": "cpu"},
    "cases": [{"attack_options.mode": "rule"}, {"attack_options.mode": "random"},
              {"poisons": "/nonexistent/poisons.npz"}],
    "grid": {"fraction": [0.1, 0.3]},
    "resources": {"cpus": 1, "gpus": 0},
}


def test_ray_matches_local_run_by_run(tmp_path):
    import ray

    grid = expand(SPEC)
    local = run_sweep(grid, tmp_path / "local", workers=0, cache_dir=str(tmp_path / "c1"), progress=False)
    remote = run_sweep(grid, tmp_path / "ray", backend="ray", workers=2, cache_dir=str(tmp_path / "c2"), progress=False)
    assert (local.ok, local.failed) == (remote.ok, remote.failed) == (4, 2)
    a = ResultsLog(tmp_path / "local" / "results.jsonl").latest()
    b = ResultsLog(tmp_path / "ray" / "results.jsonl").latest()
    assert set(a) == set(b) == {r.run_id for r in grid.runs}
    for rid in a:
        assert a[rid]["status"] == b[rid]["status"]
        if a[rid]["status"] == "ok":
            assert a[rid]["fingerprints"] == b[rid]["fingerprints"]
            assert {k: a[rid]["result"][k] for k in COMPARABLE} == {k: b[rid]["result"][k] for k in COMPARABLE}
        else:
            assert "DataError" in b[rid]["error"]
    assert not ray.is_initialized()  # the backend shut down the instance it started
    again = run_sweep(grid, tmp_path / "ray", backend="ray", workers=2, progress=False)
    assert again.skipped == 6 and again.ok == again.failed == 0  # resumes without starting Ray
