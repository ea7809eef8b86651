"""``pl.sweep``: the public call behind ``poisonlab sweep`` — dry run, real run, resume, bad arguments."""

from __future__ import annotations

import pytest
import yaml

import poisonlab as pl
from poisonlab.errors import ConfigError
from poisonlab.sweeps import ResultsLog, SweepPlan, SweepSummary, expand

SPEC = {
    "name": "api_tiny",
    "base": {"dataset": "digits", "model": "lr", "attack": "label_flip", "epochs": 2, "device": "cpu"},
    "grid": {"fraction": [0.05, 0.1]},
}


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "api_tiny.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_dry_run_plans_and_runs_nothing_then_run_then_resume(grid_file, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    p = pl.sweep(grid_file, out=out, cache=cache, dry_run=True, progress=False)
    assert isinstance(p, SweepPlan) and p.grid.name == "api_tiny" and p.directory == out.resolve()
    assert len(p.todo) == 2 and p.done == ()
    assert {r.config.out for r in p.todo} == {str(out.resolve() / "runs" / r.run_id) for r in p.grid.runs}
    assert not out.exists() and not cache.exists()  # nothing ran, nothing was written

    s = pl.sweep(grid_file, out=out, cache=cache, workers=0, progress=False)
    assert isinstance(s, SweepSummary) and (s.total, s.skipped, s.ok, s.failed, s.name) == (2, 0, 2, 0, "api_tiny")
    rows = list(ResultsLog(out / "results.jsonl").rows())
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in p.grid.runs)
    assert all(r["status"] == "ok" and r["config"]["epochs"] == 2 for r in rows)
    assert all((out / r["run_dir"] / "result.json").is_file() for r in rows)

    again = pl.sweep(grid_file, out=out, cache=cache, workers=0, progress=False)
    assert (again.skipped, again.ok, again.failed) == (2, 0, 0)
    assert len(list(ResultsLog(out / "results.jsonl").rows())) == 2  # nothing re-run
    p2 = pl.sweep(grid_file, out=out, cache=cache, dry_run=True, progress=False)
    assert p2.todo == () and {r.run_id for r in p2.done} == {r.run_id for r in p.grid.runs}


def test_a_grid_object_and_overrides(grid_file, tmp_path):
    g = expand(SPEC, "api_tiny.yaml")
    p = pl.sweep(g, out=tmp_path / "g", cache=False, dry_run=True)
    assert [r.run_id for r in p.todo] == [r.run_id for r in g.runs] and all(r.config.cache_dir is None for r in p.todo)
    # an override is set for every run, so the run ids change with it
    q = pl.sweep(grid_file, out=tmp_path / "g", overrides={"lr": 0.05}, dry_run=True)
    assert all(r.config.lr == 0.05 for r in q.todo) and {r.run_id for r in q.todo}.isdisjoint(r.run_id for r in g.runs)
    with pytest.raises(ConfigError, match="only with a grid file"):
        pl.sweep(g, overrides={"lr": 0.05}, dry_run=True)
    with pytest.raises(ConfigError, match="--fraction|fraction"):  # the grid's axis sets it
        pl.sweep(grid_file, overrides={"fraction": 0.2}, dry_run=True)


@pytest.mark.parametrize("kwargs, match", [
    ({"backend": "slurm"}, "backend"),
    ({"workers": -1}, "workers"),
    ({"workers": True}, "workers"),
    ({"workers": 1.5}, "workers"),
    ({"address": "ray://host:10001"}, "backend='ray'"),
    ({"out": 3}, "out"),
    ({"cache": 1}, "cache"),
    ({"mlflow": ""}, "mlflow"),
    ({"dry_run": "yes"}, "dry_run"),
    ({"progress": None}, "progress"),
    ({"retry_failed": 1}, "retry_failed"),
    ({"overrides": [("lr", 0.1)]}, "overrides"),
    ({"overrides": {"epochs": -1}}, "epochs"),
    ({"overrides": {"device": "tpu"}}, "device|tpu"),
])
def test_bad_arguments_raise_before_any_work(grid_file, tmp_path, kwargs, match):
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match=match):
        pl.sweep(grid_file, **{"out": out, **kwargs})
    assert not out.exists()


def test_bad_grid(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        pl.sweep(tmp_path / "missing.yaml", dry_run=True)
    with pytest.raises(ConfigError, match="Grid"):
        pl.sweep(SPEC, dry_run=True)  # a mapping: expand it first
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "base": {**SPEC["base"], "attack": "no_such_attack"}}))
    with pytest.raises(ConfigError, match="no_such_attack"):
        pl.sweep(bad, out=tmp_path / "o", dry_run=True)
