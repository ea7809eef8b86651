"""results.jsonl: sealed rows, torn-tail repair, damaged-line detection, the sweep lock."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonlab.sweeps.results import ResultsLog, SweepLock, SweepLockedError, is_intact, seal


def _rows(n):
    return [{"run_id": f"r{i}", "status": "ok", "result": {"acc": 90.0 + i, "nan": float("nan")}, "config": {"seed": i}}
            for i in range(n)]


def test_append_seal_and_read_back(tmp_path):
    log = ResultsLog(tmp_path / "results.jsonl")
    for r in _rows(3):
        log.append(r)
    rows = list(log.rows())
    assert [r["run_id"] for r in rows] == ["r0", "r1", "r2"] and all(is_intact(r) for r in rows)
    tampered = dict(rows[0], status="failed")
    assert not is_intact(tampered) and is_intact(seal(tampered))
    assert (tmp_path / "results.jsonl").read_bytes().count(b"\n") == 3


def test_latest_prefers_ok_rows(tmp_path):
    log = ResultsLog(tmp_path / "r.jsonl")
    log.append({"run_id": "a", "status": "failed", "error": "x"})
    log.append({"run_id": "a", "status": "ok"})
    log.append({"run_id": "a", "status": "failed", "error": "late"})
    log.append({"run_id": "b", "status": "failed", "error": "y"})
    latest = log.latest()
    assert latest["a"]["status"] == "ok" and latest["b"]["error"] == "y"


def test_damaged_middle_line_is_skipped(tmp_path, capsys):
    log = ResultsLog(tmp_path / "r.jsonl")
    for r in _rows(3):
        log.append(r)
    lines = log.path.read_bytes().splitlines(keepends=True)
    row = json.loads(lines[1])
    row["result"]["acc"] = 0.0  # a bit flip that still parses as JSON
    lines[1] = (json.dumps(row) + "\n").encode()
    log.path.write_bytes(b"".join(lines))
    assert [r["run_id"] for r in log.rows()] == ["r0", "r2"]
    assert "damaged row skipped" in capsys.readouterr().err


@settings(max_examples=40, deadline=None)
@given(cut=st.floats(0.0, 1.0))
def test_repair_after_a_write_cut_anywhere(tmp_path_factory, cut):
    """Whatever byte a kill cuts the file at, repair leaves exactly the whole rows before it."""
    path = tmp_path_factory.mktemp("r") / "r.jsonl"
    log = ResultsLog(path)
    for r in _rows(4):
        log.append(r)
    data = path.read_bytes()
    n = int(cut * len(data))
    path.write_bytes(data[:n])
    removed = log.repair()
    kept = path.read_bytes()
    assert kept == data[: data.rfind(b"\n", 0, n) + 1] if b"\n" in data[:n] else kept == b""
    assert removed == n - len(kept)
    assert kept == b"" or kept.endswith(b"\n")
    assert [r["run_id"] for r in log.rows()] == [f"r{i}" for i in range(kept.count(b"\n"))]
    log.append({"run_id": "new", "status": "ok"})  # appending after repair gives a clean file
    assert [r["run_id"] for r in log.rows()][-1] == "new"


def test_sweep_lock_is_exclusive(tmp_path):
    with SweepLock(tmp_path):
        with pytest.raises(SweepLockedError):
            with SweepLock(tmp_path):
                pass
    with SweepLock(tmp_path):  # released
        pass
