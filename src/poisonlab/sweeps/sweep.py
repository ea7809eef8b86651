"""The sweep coordinator: schedule the unfinished runs of a grid on a backend, record each result.

Layout of a sweep directory::

    <dir>/results.jsonl     one sealed row per finished run (see results.py); the only resume state
    <dir>/grid.json         the resolved runs (id -> config), rewritten at each start
    <dir>/progress.json     done / running / failed / remaining / ETA and each running run's stage
    <dir>/runs/<run_id>/    the protocol's artifacts of each run (result.json, poisons, weights)

Re-running the same command skips runs that have an ``ok`` row (and failed ones unless
``retry_failed``). A coordinator killed at any moment loses only the runs in flight.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from ..artifacts import write_json
from ..protocol.config import RunSpec
from .backends import Backend, make_backend
from .grid import Grid, Run
from .results import ResultsLog, SweepLock


@dataclass(frozen=True)
class SweepSummary:
    total: int
    skipped: int
    ok: int
    failed: int
    directory: Path
    #: the grid's name
    name: str = ""


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep would do, run nothing (``pl.sweep(..., dry_run=True)``): the grid, its results
    directory and the runs still to run (configs with ``out`` and ``cache_dir`` filled in); every
    other run of the grid has a result in ``directory/results.jsonl`` and is skipped."""

    grid: Grid
    directory: Path
    todo: tuple[Run, ...]

    @property
    def done(self) -> tuple[Run, ...]:
        """The runs of the grid that would be skipped (already finished)."""
        pending = {r.run_id for r in self.todo}
        return tuple(r for r in self.grid.runs if r.run_id not in pending)


def plan(grid: Grid, directory: str | Path, *, cache_dir: str | None, retry_failed: bool = False) -> tuple[list[Run], int]:
    """The runs still to do (configs with ``out`` and ``cache_dir`` filled in) and how many are finished."""
    directory = Path(directory).resolve()
    finished = ResultsLog(directory / "results.jsonl").latest()
    todo = []
    for run in grid.runs:
        row = finished.get(run.run_id)
        if row is not None and (row.get("status") == "ok" or not retry_failed):
            continue
        cfg = replace(run.config, out=str(directory / "runs" / run.run_id), cache_dir=cache_dir)  # type: ignore[type-var]
        todo.append(Run(run.run_id, cfg))
    return todo, len(grid.runs) - len(todo)


def run_sweep(
    grid: Grid,
    directory: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    cache_dir: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepSummary:
    """Run every unfinished run of ``grid``; append one row per finished run to ``results.jsonl``.

    ``workers``: local processes (default 1, 0 = in this process); with Ray and no ``address``, the
    runs at once on the local Ray instance (default: one per CPU). Returns the counts of skipped (already finished), ok and failed runs.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with SweepLock(directory):
        log = ResultsLog(directory / "results.jsonl")
        cut = log.repair()
        if cut:
            print(f"poisonlab: repaired {log.path}: removed a {cut}-byte unfinished last line", file=sys.stderr)
        write_json(directory / "grid.json", {"name": grid.name, "resources": vars(grid.resources),
                                             "runs": {r.run_id: r.config.to_dict() for r in grid.runs}})
        todo, skipped = plan(grid, directory, cache_dir=cache_dir, retry_failed=retry_failed)
        labels = {r.run_id: r.label() for r in grid.runs}
        ok = failed = 0
        if not todo:
            _write_progress(directory, len(grid.runs), skipped, 0, 0, {}, 0.0)
            return SweepSummary(len(grid.runs), skipped, 0, 0, directory, grid.name)
        be: Backend = make_backend(backend, workers=workers, resources=grid.resources,
                                   stage_dir=directory / ".stages", address=address)
        queue = list(todo)
        bar = tqdm(total=len(grid.runs), initial=skipped, desc=f"sweep {grid.name}", unit="run",
                   disable=not progress, dynamic_ncols=True, smoothing=0.0)
        t0, in_flight, finished, last_status, last_write = time.time(), 0, False, "", 0.0
        tty = progress and sys.stderr.isatty()
        try:
            while queue or in_flight:
                while queue and in_flight < be.capacity():
                    run = queue.pop(0)
                    config = run.config
                    be.submit(run.run_id, config.to_dict() if isinstance(config, RunSpec) else config)
                    in_flight += 1
                for row in be.poll(timeout=0.5):
                    in_flight -= 1
                    row = {**row, "run_dir": f"runs/{row['run_id']}", "label": labels.get(row["run_id"], "")}
                    sealed = log.append(row)
                    if row["status"] == "ok":
                        ok += 1
                    else:
                        failed += 1
                    bar.update(1)
                    _announce(bar, sealed, progress)
                    if on_row:
                        on_row(sealed)
                stages = be.stages()
                done_now = ok + failed
                eta = (time.time() - t0) / done_now * (len(queue) + in_flight) if done_now else float("nan")
                status = (f"done {skipped + ok} | running {sum(s != 'queued' for s in stages.values())} | "
                          f"failed {failed} | remaining {len(queue) + in_flight} | "
                          + " ".join(f"{rid[:6]}:{s}" for rid, s in stages.items() if s != "queued"))
                if status != last_status or tty:  # in a log file, one line per change, not per poll
                    bar.set_postfix_str(status, refresh=True)
                if status != last_status or time.time() - last_write > 5.0:
                    _write_progress(directory, len(grid.runs), skipped + ok, failed, len(queue) + in_flight, stages, eta)
                    last_write = time.time()
                last_status = status
            _write_progress(directory, len(grid.runs), skipped + ok, failed, 0, {}, 0.0)
            finished = True
        finally:
            bar.close()
            be.close(abort=not finished)
        return SweepSummary(len(grid.runs), skipped, ok, failed, directory, grid.name)


def _announce(bar: Any, row: dict[str, Any], progress: bool) -> None:
    if not progress:
        return
    if row["status"] == "ok":
        bar.write(f"ok     {row['run_id']}  {row['label']}: {_summary(row['result'])}  ({row.get('seconds', 0):.1f} s)")
    else:
        bar.write(f"FAILED {row['run_id']}  {row['label']}: {row['error']}")


def _summary(result: dict[str, Any]) -> str:
    """One line for a finished cell: a protocol run's accuracies, or any other cell's scalar fields
    (an evaluation's pricing and probe cells record times, not accuracies)."""
    if all(k in result for k in ("clean_accuracy", "poisoned_accuracy", "accuracy_drop")):
        return (f"acc1 {result['clean_accuracy']:.2f} %  acc2 {result['poisoned_accuracy']:.2f} %  "
                f"drop {result['accuracy_drop']:.2f}")
    scalars = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
               if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return "  ".join(scalars[:4])


def _write_progress(directory: Path, total: int, done: int, failed: int, remaining: int,
                    stages: dict[str, str], eta: float) -> None:
    write_json(directory / "progress.json", {
        "total": total, "done": done, "failed": failed, "remaining": remaining,
        "running": {k: v for k, v in stages.items() if v != "queued"},
        "eta_seconds": None if eta != eta else round(eta, 1), "updated": time.time(),
    })


