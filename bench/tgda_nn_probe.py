"""TGDA on the MNIST NN victim (784-1000-1000) per setting: does the game stay finite, what did the
safeguards do, and how far do the follower's D_v accuracy and a retrained victim's test accuracy move?
A check of TGDA's defaults on a non-convex victim (the default leader_lr 0.1 was measured on LR).

    OMP_NUM_THREADS=1 python bench/tgda_nn_probe.py --subset 6000 --epochs 3 --settings unguarded,default
    OMP_NUM_THREADS=1 python bench/tgda_nn_probe.py --subset 3000 --epochs 3 --model cnn \
        --recipe '{"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.01, "schedule": "cosine"}'

``--subset N`` attacks the first N points of the seeded MNIST D_tr split (and N/3 of D_v), with a victim
trained ``--victim-epochs`` epochs on them, so that an epoch costs N/1000 rounds instead of 42; 0 runs on
the whole split (the clean victim through ``--cache-dir``, as before). Settings: ``unguarded`` is the
game as it was before the safeguards (no trust region, no CG fallback, no rollback); ``default`` today's
defaults. Writes bench/results/<--out>.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import RESULTS, clean_victim, environment  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.data import AttackData, PoisonedDataset, load_dataset, split_train_val  # noqa: E402
from poisonlab.errors import DivergenceError  # noqa: E402
from poisonlab.protocol import RunSpec  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.training import TrainConfig, Victim, VictimSpec, accuracy  # noqa: E402

UNGUARDED = {"safeguard.trust_region": None, "safeguard.cg_fallback": False, "safeguard.backtracks": 0}
SETTINGS = {
    "default": {},
    "unguarded": UNGUARDED,
    "normal_equations": {**UNGUARDED, "solver.normal_equations": True},
    "leader_lr_0.01": {**UNGUARDED, "leader_lr": 0.01},
    "study": {**UNGUARDED, "leader_lr": 0.01, "solver.normal_equations": True, "solver.damping": 0.1},  # the TGDA study's NN run
}


def _subset_setup(n: int, victim_epochs: int, model: str, recipe: dict) -> tuple[AttackData, Victim, object]:
    b = load_dataset("mnist")
    d = split_train_val(b.train, torch_generator(0, "split"))
    data = AttackData(d.train.subset(torch.arange(n)), d.val.subset(torch.arange(max(n // 3, 1))))
    spec = VictimSpec(model, (1, 28, 28), 10, TrainConfig(epochs=victim_epochs, batch_size=1000, device="cpu", **recipe))
    model = spec.train(data.train, 0)
    return data, Victim(spec, 0, {k: v.detach().clone() for k, v in model.state_dict().items()}), b.test


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache-dir", default="runs/bench_table_2_2/cache")
    p.add_argument("--settings", default="default,unguarded")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--subset", type=int, default=0, help="attack the first N points of D_tr (0: all of it)")
    p.add_argument("--victim-epochs", type=int, default=20, help="victim training epochs with --subset")
    p.add_argument("--model", default="nn", help="victim with --subset (nn, cnn)")
    p.add_argument("--recipe", default="{}", help='victim recipe with --subset, JSON, e.g. {"optimizer": "adamw", "lr": 1e-3}')
    p.add_argument("--out", default="tgda_nn_probe.json", help="file name under bench/results")
    args = p.parse_args()
    t0 = time.perf_counter()
    if args.subset:
        data, victim, test = _subset_setup(args.subset, args.victim_epochs, args.model, json.loads(args.recipe))
    else:
        cfg = RunSpec(dataset="mnist", model="nn", seed=0, device="cpu", cache_dir=args.cache_dir or None)
        prep, _, victim = clean_victim(cfg)
        data, test = prep.attack_data(), None
    clean_acc = accuracy(victim.clean_model(), test) if test is not None else None
    out = {"environment": environment(), "epochs": args.epochs, "subset": args.subset, "victim_epochs": args.victim_epochs,
           "model": args.model if args.subset else "nn", "recipe": victim.spec.recipe.describe(),
           "setup_seconds": time.perf_counter() - t0, "clean_test_accuracy": clean_acc, "runs": {}}
    for name in args.settings.split(","):
        opts = {"epochs": args.epochs, "selection.every": 0, **SETTINGS[name]}
        t0 = time.perf_counter()
        try:
            ps = build_attack("tgda", opts).poison(data, victim, 0.03, generator=torch_generator(0, "attack"))
            row = {"finite": True, "follower": ps.info["follower"], "val_accuracy": ps.info["val_accuracy"],
                   "leader_grad_norm": ps.info["leader_grad_norm"],
                   "cg_iterations": ps.info["cg_iterations"], "safeguards": ps.info["safeguards"],
                   "max_relative_step": ps.info["max_relative_step"], "seconds_per_epoch": ps.info["seconds_per_epoch"]}
            if test is not None:  # the test stage: the victim retrained from scratch with its recipe
                model = victim.spec.train(PoisonedDataset.combine(data.train, ps).dataset, 0)
                row["poisoned_test_accuracy"] = accuracy(model, test)
                row["drop"] = clean_acc - row["poisoned_test_accuracy"]
        except (DivergenceError, RuntimeError) as exc:
            row = {"finite": False, "error": str(exc)}
        row.update(options=opts, seconds=time.perf_counter() - t0)
        out["runs"][name] = row
        print(f"[tgda_nn_probe] {name}: {json.dumps(row)[:600]}", file=sys.stderr, flush=True)
        (RESULTS / args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
