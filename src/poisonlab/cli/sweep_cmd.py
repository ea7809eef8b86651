"""poisonlab sweep GRID.yaml: expand GRID.yaml (base + cases x grid), validate every run, then run the
ones without a result in OUT/results.jsonl, in local processes or on Ray. Re-run the same command to
resume (also after kill -9). Exit code 0: every run ok; 1: some runs failed (recorded with their
error); 2: invalid grid."""

from __future__ import annotations

import argparse

from ..api import sweep
from ..sweeps import SweepPlan
from .grid_flags import GridHelp, add_grid_args
from .recipe_flags import recipe_args

#: what the shared grid flags do in a sweep
FLAGS = GridHelp(workers="default 1; 0 = inside this process", ray="default without --address: one per CPU",
                 cache="artifact cache of clean victims, targets, generators (default <cache root>/artifacts; "
                       "see `poisonlab cache ls`)",
                 device="train every run on this device (auto, cpu, cuda, cuda:N), as if the grid's base said "
                        "device: ...; the device is part of each run's id, so GPU and CPU results are kept apart. "
                        "Checked before anything runs (local backend: against this machine)",
                 recipe="; every run, as if the grid's base said it")


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a YAML grid of configs (resumable; local processes or Ray)",
                       description=__doc__)
    p.add_argument("grid", metavar="GRID.yaml")
    p.add_argument("--out", help="sweep directory (default sweeps/<grid name>)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--no-cache", action="store_true", help="train every clean victim anew")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs recorded as failed")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs, run nothing")
    p.add_argument("--mlflow", metavar="URI",
                   help="also log each finished run to MLflow at URI, e.g. sqlite:///mlflow.db (experiment = grid name)")
    add_grid_args(p, FLAGS)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides = {**({"device": args.device} if args.device is not None else {}), **recipe_args(args)}
    res = sweep(args.grid, out=args.out, backend=args.backend, workers=args.workers, address=args.address,
               overrides=overrides, cache=False if args.no_cache else (args.cache_dir or True),
               retry_failed=args.retry_failed, mlflow=args.mlflow, dry_run=args.dry_run, progress=not args.quiet)
    if isinstance(res, SweepPlan):
        pending = {r.run_id for r in res.todo}
        print(f"grid {res.grid.name}: {len(res.grid.runs)} runs ({len(res.done)} finished, {len(res.todo)} to run) "
              f"-> {res.directory}/results.jsonl")
        for r in res.grid.runs:
            print(f"  {r.run_id}  {'todo' if r.run_id in pending else 'done'}  {r.label()}")
        return 0
    print(f"sweep {res.name}: {res.total} runs: {res.skipped} already finished, {res.ok} ok, {res.failed} failed "
          f"-> {res.directory / 'results.jsonl'}")
    return 1 if res.failed else 0
