"""One TGDA epoch on the MNIST NN victim (784-1000-1000, its cached clean model) per setting: does the
generator stay finite, and how far does D_v accuracy move? A one-off check of TGDA's defaults on a
non-convex victim (the default leader_lr 0.1 was measured on LR).

    OMP_NUM_THREADS=1 python bench/tgda_nn_probe.py --cache-dir runs/bench_table_2_2/cache
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, clean_victim, environment  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.protocol import RunConfig  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402

SETTINGS = {
    "default": {},
    "normal_equations": {"solver.normal_equations": True},
    "leader_lr_0.01": {"leader_lr": 0.01},
    "study": {"leader_lr": 0.01, "solver.normal_equations": True, "solver.damping": 0.1},  # the TGDA study's NN run
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-dir", default="runs/bench_table_2_2/cache")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--out", default="tgda_nn_probe.json", help="file name under bench/results")
    args = p.parse_args()
    cfg = RunConfig(dataset="mnist", model="nn", seed=0, device="cpu", cache_dir=args.cache_dir or None)
    prep, _, victim = clean_victim(cfg)
    out = {"environment": environment(), "epochs": args.epochs, "runs": {}}
    for name in args.settings.split(","):
        opts = {"epochs": args.epochs, "selection.every": 0, **SETTINGS[name]}
        t0 = time.perf_counter()
        try:
            ps = build_attack("tgda", opts).poison(prep.data, victim, 0.03, generator=torch_generator(0, "attack"))
            row = {"finite": True, "val_accuracy": ps.info["val_accuracy"], "leader_grad_norm": ps.info["leader_grad_norm"],
                   "cg_iterations": ps.info["cg_iterations"]}
        except RuntimeError as exc:
            row = {"finite": False, "error": str(exc)}
        row.update(options=opts, seconds=time.perf_counter() - t0)
        out["runs"][name] = row
        print(f"[tgda_nn_probe] {name}: {json.dumps(row)[:400]}", file=sys.stderr, flush=True)
        (RESULTS / args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
