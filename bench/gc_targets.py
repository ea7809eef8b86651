"""Which GradPC targets can Gradient Canceling reach with 3 % poison? (MNIST, logistic regression)

    python bench/gc_targets.py                       # ε_w sweep + rescaled ε_w = 0.5 targets, ε = 3 %
    python bench/gc_targets.py --quick               # digits, 5 victim epochs: a smoke test

For each GradPC radius ε_w (relative L2, the thesis' convention) the clean victim is corrupted into a
target w, its reachability threshold τ (thesis eq. 3.6, multiclass cross-entropy: a *necessary*
condition for any poison set, bounded or not) is computed from D_tr, then GC crafts ε·N poisons
(pixels in [0, 1]) and the victim is retrained from scratch with its recipe on D_tr ∪ D_p.

Second part: accuracy is invariant to scaling w (and its bias) by s > 0, but τ is not —
τ(s·w) → 0 as s → 0 — so a scaled copy of a damaging target passes the necessary condition. The
rows for s < 1 show whether the box [0, 1] on the poison pixels then becomes the binding limit
(τ_box of poisonlab.theory.box, the necessary condition for pixels in [0, 1], and the relative
gradient norm GC reaches say how much of the target's clean gradient 3 % of box-bounded poisons
can cancel).

Results: bench/results/gc_targets.json (rewritten after every row).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.attacks.gradpc import corrupt  # noqa: E402
from poisonlab.data import PoisonedDataset  # noqa: E402
from poisonlab.protocol import RunConfig, prepare, save_model, write_json  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.theory import multiclass_reachability  # noqa: E402
from poisonlab.training import Victim, accuracy, predict_logits  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps-w", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.2, 0.05, 0.01], help="rescalings of the largest ε_w target")
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("--steps", type=int, default=600, help="GC steps (default 600)")
    ap.add_argument("--lr", type=float, default=0.05, help="GC Adam step in pixel units (default 0.05)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=os.environ.get("POISONLAB_DATA"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "gc_targets.json"))
    args = ap.parse_args(argv)
    dataset, epochs = ("digits", 5) if args.quick else ("mnist", None)
    out = Path(args.out)
    t0 = time.perf_counter()
    prep = prepare(RunConfig(dataset=dataset, model="lr", seed=args.seed, epochs=epochs, data_dir=args.data_dir))
    data, test = prep.data, prep.bundle.test
    clean = prep.spec.train(data.train, args.seed)
    victim = Victim(prep.spec, args.seed, {k: v.clone() for k, v in clean.state_dict().items()})
    acc1 = accuracy(clean, test)
    report = {"dataset": dataset, "model": "lr", "fraction": args.fraction, "gc_steps": args.steps, "gc_lr": args.lr,
              "seed": args.seed, "torch_threads": torch.get_num_threads(), "clean_accuracy": acc1,
              "clean_weight_norm": float(torch.cat([p.detach().flatten() for p in clean.parameters()]).norm()),
              "rows": []}
    targets = []
    for e in args.eps_w:
        t, _ = corrupt(clean, data.val, eps_w=e)
        targets.append((e, 1.0, t))
    base_eps_w, _, base = targets[-1]  # the largest radius: rescaled copies
    for s in args.scales:
        t = copy.deepcopy(base)
        with torch.no_grad():
            for p in t.parameters():
                p.mul_(s)
        targets.append((base_eps_w, s, t))
    tmp = out.with_name(f"{out.stem}_target.safetensors")
    for eps_w, scale, target in targets:
        reach = multiclass_reachability(predict_logits(target, data.train.x), data.train.y)
        save_model(tmp, target, {"model": "lr", "stage": "target:gradpc", "eps_w": str(eps_w), "scale": str(scale)})
        attack = build_attack("gc", {"target": str(tmp), "steps": args.steps, "lr": args.lr})
        ta = time.perf_counter()
        ps = attack.poison(data, victim, args.fraction, generator=torch_generator(args.seed, "attack"))
        t_attack = time.perf_counter() - ta
        retrained = victim.retrain(PoisonedDataset.combine(data.train, ps).dataset)
        acc2 = accuracy(retrained, test)
        rep = attack.assess(ps, retrained, test)
        row = {"eps_w": eps_w, "scale": scale, "target_test_accuracy": accuracy(target, test), "tau": reach.tau,
               "passes_tau": reach.reachable(ps.info["eps"]),
               "tau_box": ps.info["tau_box"], "passes_tau_box": ps.info["eps"] >= ps.info["tau_box"], "poisoned_accuracy": acc2, "accuracy_drop": acc1 - acc2,
               "clean_grad_norm_at_target": ps.info["clean_grad_norm"],
               "final_rel_grad_norm": ps.info["final_rel_grad_norm"], "gc_seconds": t_attack,
               "retrained_target_agreement": rep["retrained_target_agreement"]}
        report["rows"].append(row)
        report["seconds"] = time.perf_counter() - t0
        write_json(out, report)
        print(f"ε_w={eps_w:g} s={scale:g}: target {row['target_test_accuracy']:.2f} %, τ={reach.tau:.3g}, τ_box={row['tau_box']:.3g} | "
              f"{acc1:.2f} → {acc2:.2f} (drop {acc1 - acc2:.2f}), rel. grad norm → {row['final_rel_grad_norm']:.3f}, "
              f"agreement with target {row['retrained_target_agreement']:.1f} %", file=sys.stderr, flush=True)
    tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
