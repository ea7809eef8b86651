"""Real ``kill -9`` of a real sweep process at several moments, then resume: no lost, duplicated
or corrupt rows, and no orphaned worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import poisonlab
from poisonlab.sweeps import ResultsLog, expand

pytestmark = pytest.mark.slow

SPEC = {
    "name": "killme",
    "base": {"dataset": "digits", "model": "lr", "epochs": 3, "device": "cpu"},
    "cases": [{"attack_options.mode": "rule"}, {"attack_options.mode": "random"}],
    "grid": {"fraction": [0.05, 0.1, 0.2, 0.3], "seed": [0]},
}


def _start(spec: Path, out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(poisonlab.__file__).parents[1]), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([sys.executable, "-m", "poisonlab", "sweep", str(spec), "--out", str(out), "--workers", "2",
                             "--quiet", "--cache-dir", str(cache)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> list[int]:
    """Wait until ``ready()``, then SIGKILL the coordinator; return the workers it had."""
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, f"sweep ended before the kill: {proc.stderr.read().decode()}"
        assert time.time() - t0 < timeout, "sweep made no progress"
        time.sleep(0.02)
    workers = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return workers


def test_kill_9_at_any_moment_then_resume(tmp_path):
    spec = tmp_path / "killme.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out, cache = tmp_path / "sweep", tmp_path / "cache"
    results = out / "results.jsonl"
    grid_ids = sorted(r.run_id for r in expand(SPEC).runs)
    orphans: list[int] = []

    # 1: while starting up (before any run finished)
    orphans += _kill_when(_start(spec, out, cache), lambda: (out / ".lock").exists())
    # 2: right after the first row lands (other runs in flight)
    before = _lines(results)
    orphans += _kill_when(_start(spec, out, cache), lambda: _lines(results) >= before + 1)
    # 3: a little after the next row
    before = _lines(results)
    proc = _start(spec, out, cache)
    orphans += _kill_when(proc, lambda: _lines(results) >= before + 1 and time.sleep(0.15) is None)
    n_before_tear = _lines(results)
    assert 2 <= n_before_tear < len(grid_ids)

    # workers must leave with their coordinator (they watch their parent)
    deadline = time.time() + 20
    while any(_alive(p) for p in orphans) and time.time() < deadline:
        time.sleep(0.2)
    lingering = [p for p in orphans if _alive(p)]
    for p in lingering:  # clean up what this test started before failing
        os.kill(p, signal.SIGKILL)
    assert not lingering, f"orphaned workers {lingering}"

    # a kill in the middle of a row write leaves an unterminated tail: emulate its bytes
    rows = [json.loads(line) for line in results.read_bytes().splitlines()]
    with open(results, "ab") as f:
        f.write(json.dumps(rows[-1]).encode()[:57])

    proc = _start(spec, out, cache)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert b"repaired" in err

    raw = results.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is whole JSON
    log = ResultsLog(results)
    intact = list(log.rows())
    assert len(intact) == len(parsed) == len(grid_ids)  # nothing corrupt, nothing duplicated
    assert sorted(r["run_id"] for r in intact) == grid_ids  # nothing lost
    assert all(r["status"] == "ok" for r in intact)
    # a finished run's artifacts are complete
    for r in intact:
        assert json.loads((out / r["run_dir"] / "result.json").read_text())["accuracy_drop"] == r["result"]["accuracy_drop"]

    # and the same command once more has nothing to do
    proc = _start(spec, out, cache)
    proc.communicate(timeout=120)
    assert proc.returncode == 0 and _lines(results) == len(grid_ids)


def test_a_dying_worker_fails_only_its_run_and_the_pool_is_rebuilt(tmp_path):
    from poisonlab.protocol import RunSpec
    from poisonlab.sweeps import LocalBackend, Resources

    be = LocalBackend(1, Resources(), tmp_path / "stages")
    try:
        slow = RunSpec(dataset="digits", model="nn", epochs=200, device="cpu", out=str(tmp_path / "slow")).to_dict()
        be.submit("slow", slow)
        t0 = time.time()
        while be.stages().get("slow") not in ("pretrain", "attack", "retrain"):
            assert time.time() - t0 < 120 and be._futures, "the run never started"
            time.sleep(0.05)
        (worker,) = list(be._pool._processes)  # the one worker process this test started
        os.kill(worker, signal.SIGKILL)
        rows = []
        while not rows:
            rows = be.poll(timeout=1.0)
        assert [(r["run_id"], r["status"]) for r in rows] == [("slow", "failed")] and "worker" in rows[0]["error"]
        quick = RunSpec(dataset="digits", model="lr", epochs=1, device="cpu", out=str(tmp_path / "quick")).to_dict()
        be.submit("quick", quick)
        rows = []
        while not rows:
            rows = be.poll(timeout=1.0)
        assert [(r["run_id"], r["status"]) for r in rows] == [("quick", "ok")]
    finally:
        be.close(abort=True)
