"""``results.jsonl``: one JSON line per finished run, appended atomically, safe against ``kill -9``.

Row format (one line, UTF-8)::

    {"run_id": "...", "status": "ok" | "failed", "config": {...}, "result": {...} | null,
     "error": null | "...", "fingerprints": {...}, "finished_at": "...", "row_sha256": "..."}

``row_sha256`` is the sha256 of the canonical JSON of the row without that field, so a damaged
line is detected. Only the sweep's coordinator writes (a single writer, held by a lock file);
each row is written with a single ``os.write`` on an ``O_APPEND`` descriptor and ``fsync``-ed.
A process killed mid-write can at worst leave an unterminated last line: :meth:`ResultsLog.repair`
(run before the first append of a session) cuts it off, so that run is simply re-run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..artifacts import json_default
from ..cache import canonical_json
from ..errors import DataError, PoisonlabError

SCHEMA = 1


class SweepLockedError(PoisonlabError):
    """Another process is running a sweep in this directory."""


def seal(row: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in row.items() if k != "row_sha256"}
    return {**body, "row_sha256": hashlib.sha256(canonical_json(body).encode()).hexdigest()}


def is_intact(row: Any) -> bool:
    return isinstance(row, dict) and "row_sha256" in row and seal(row)["row_sha256"] == row["row_sha256"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultsLog:
    """Append-only JSON-lines file of run records, keyed by ``run_id``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def repair(self) -> int:
        """Cut an unterminated last line (a write killed midway). Returns the bytes removed."""
        if not self.path.is_file():
            return 0
        size = self.path.stat().st_size
        if size == 0:
            return 0
        with open(self.path, "rb+") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            keep = 0
            step = 65536
            pos = size
            while pos > 0:  # find the last newline, scanning backwards in blocks
                start = max(0, pos - step)
                f.seek(start)
                block = f.read(pos - start)
                i = block.rfind(b"\n")
                if i >= 0:
                    keep = start + i + 1
                    break
                pos = start
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Seal ``row`` and append it as one line with one ``write`` call, then fsync."""
        plain = json.loads(json.dumps({"schema": SCHEMA, "finished_at": now_iso(), **row}, default=_default))
        sealed = seal(plain)
        line = (json.dumps(sealed, sort_keys=True, separators=(",", ":"), default=_default) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):  # pragma: no cover - disk full: leave a cut line for repair()
                raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        return sealed

    def rows(self, *, warn: bool = True) -> Iterator[dict[str, Any]]:
        """Every intact row in file order; damaged lines are skipped (with a warning on stderr)."""
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except ValueError:
                    row = None
                if not is_intact(row) or not raw.endswith(b"\n"):
                    if warn:
                        print(f"poisonlab: warning: {self.path}:{n}: damaged row skipped", file=sys.stderr)
                    continue
                yield row

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last intact row of each run id (an ``ok`` row is never replaced by a later failure)."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows():
            prev = out.get(row["run_id"])
            if prev is not None and prev.get("status") == "ok" and row.get("status") != "ok":
                continue
            out[row["run_id"]] = row
        return out


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """The latest row per run of a ``results.jsonl`` (or a sweep directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.jsonl"
    if not p.is_file():
        raise DataError(f"results file {p} does not exist")
    return list(ResultsLog(p).latest().values())


class SweepLock:
    """An exclusive, non-blocking ``flock`` on ``<sweep dir>/.lock`` (released by the kernel on death)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / ".lock"
        self._f: Any = None

    def __enter__(self) -> "SweepLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+")
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise SweepLockedError(f"another sweep is running in {self.path.parent} (lock {self.path} is held)") from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"{os.getpid()}\n")
        self._f.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
        self._f.close()


def _default(o: Any) -> Any:
    """The protocol's JSON conversion (numpy scalars, tensors, paths, tuples); anything else as text."""
    try:
        return json_default(o)
    except TypeError:
        return str(o)
    return str(o)
