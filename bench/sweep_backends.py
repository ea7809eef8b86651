"""Bench: one digits grid through the local backend (cold and warm cache) and Ray; identical per run?

Prints wall times, cache hits and whether every run's metrics and output fingerprints (poisons,
clean and poisoned weights) agree across the three executions, then the report table.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/sweep_backends.py            # 12 runs (examples/digits_label_flip.yaml)
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/sweep_backends.py --quick    # 4 runs, 2 epochs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from poisonlab.reporting.report import build_table, flatten, render
from poisonlab.sweeps import COMPARABLE, ResultsLog, expand, load_grid, run_sweep

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"name": "quick", "base": {"dataset": "digits", "model": "lr", "epochs": 2, "device": "cpu"},
         "cases": [{"attack_options.mode": "rule"}, {"attack_options.mode": "random"}], "grid": {"fraction": [0.1, 0.3]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 runs of 2 epochs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--out", help="keep the sweeps here (default: a temporary directory)")
    args = ap.parse_args()
    grid = expand(QUICK) if args.quick else load_grid(ROOT / "examples" / "digits_label_flip.yaml")
    out = Path(args.out or tempfile.mkdtemp(prefix="poisonlab-bench-"))
    plans = [("local, cold cache", "local", "local-cold", "cache-a"), ("local, warm cache", "local", "local-warm", "cache-a")]
    try:
        import ray  # noqa: F401

        if not args.no_ray:
            plans.append(("ray (local instance), cold cache", "ray", "ray", "cache-b"))
    except ImportError:
        print("ray not installed: skipping the Ray backend")
    print(f"grid {grid.name}: {len(grid.runs)} runs, {args.workers} workers, sweeps in {out}")
    logs = {}
    for title, backend, sub, cache in plans:
        t0 = time.perf_counter()
        s = run_sweep(grid, out / sub, backend=backend, workers=args.workers, cache_dir=str(out / cache), progress=False)
        wall = time.perf_counter() - t0
        rows = ResultsLog(out / sub / "results.jsonl").latest()
        hits = sum((r.get("result") or {}).get("cache", {}).get("victim_clean") == "hit" for r in rows.values())
        print(f"{title:<34} {wall:7.1f} s wall  ok {s.ok}  failed {s.failed}  clean-victim cache hits {hits}/{len(rows)}")
        logs[title] = rows
    ref_title, ref = next(iter(logs.items()))
    for title, rows in logs.items():
        same = set(rows) == set(ref) and all(
            rows[k]["fingerprints"] == ref[k]["fingerprints"]
            and all(rows[k]["result"][m] == ref[k]["result"][m] for m in COMPARABLE) for k in ref)
        print(f"identical per run to '{ref_title}': {title}: {same}")
    print()
    print(render(build_table(flatten(list(ref.values()))), "md"))


if __name__ == "__main__":
    main()
