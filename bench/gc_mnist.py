"""Gradient Canceling with GradPC targets on MNIST (thesis §3.5, Table 3.1 targets).

    python bench/gc_mnist.py                        # LR: ε = 3 % plus the ε sweep 0.01 … 1.0
    python bench/gc_mnist.py --models lr nn cnn     # + NN and CNN at ε = 3 % (slow on CPU)
    python bench/gc_mnist.py --quick                # digits, few epochs/steps: a smoke test

Per model: train the clean victim on D_tr (protocol split, recipe lr 0.1 / 100 epochs / batch 1000),
make the GradPC target once (ε_w = 0.5 on D_v, saved as safetensors and passed to ``gc`` as a file so
every ε uses the same target), then for each ε: craft with ``gc`` (timed: the GC attack stage),
retrain from scratch on D_tr ∪ D_p, and record test accuracy, the drop, the target's τ (eq. 3.6)
beside ε, the mixed gradient-norm trace and the retrained model's distance/agreement to the target.
Results: bench/results/gc_mnist.json (rewritten after every row).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, clean_victim  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)

import torch  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.attacks.targets import make_target  # noqa: E402
from poisonlab.cache import as_cache  # noqa: E402
from poisonlab.data import PoisonedDataset, poison_count  # noqa: E402
from poisonlab.protocol import RunSpec, save_model, write_json  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.theory import multiclass_reachability  # noqa: E402
from poisonlab.training import accuracy, predict_logits  # noqa: E402

GOALS = {"lr": 20.0, "nn": 6.0, "cnn": 8.0}  # accuracy drop (points) at ε = 3 %


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lr"], choices=["lr", "nn", "cnn"])
    ap.add_argument("--fraction", type=float, default=0.03, help="the headline ε (default 0.03)")
    ap.add_argument("--lr-sweep", type=float, nargs="*", default=[0.01, 0.1, 0.3, 1.0],
                    help="extra ε values for LR (default 0.01 0.1 0.3 1.0)")
    ap.add_argument("--eps-w", type=float, default=0.5)
    ap.add_argument("--pc-steps", type=int, default=50, help="GradPC ascent steps (default 50)")
    ap.add_argument("--pc-lr", type=float, default=0.1, help="GradPC step / radius (default 0.1)")
    ap.add_argument("--steps", type=int, default=300, help="GC steps (default 300)")
    ap.add_argument("--lr", type=float, default=0.02, help="GC Adam step in pixel units (default 0.02)")
    ap.add_argument("--init", default="random", choices=["random", "aligned", "plan"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=os.environ.get("POISONLAB_DATA"))
    ap.add_argument("--cache-dir", default=None,
                    help="re-use / store the clean victims and GradPC targets in this cache (a hit makes the seconds a load)")
    ap.add_argument("--quick", action="store_true", help="digits, 5 epochs, 20 GC steps")
    ap.add_argument("--out", default=str(RESULTS / "gc_mnist.json"))
    args = ap.parse_args(argv)
    dataset = "digits" if args.quick else "mnist"
    epochs = 5 if args.quick else None
    steps = 20 if args.quick else args.steps
    t_start = time.perf_counter()
    report: dict = {"dataset": dataset, "quick": args.quick, "eps_w": args.eps_w, "gc_steps": steps, "gc_lr": args.lr,
                    "init": args.init, "seed": args.seed, "torch_threads": torch.get_num_threads(), "models": {}}
    out = Path(args.out)
    for model_name in args.models:
        t0 = time.perf_counter()
        prep, clean, victim = clean_victim(RunSpec(dataset=dataset, model=model_name, seed=args.seed, epochs=epochs,
                                                     data_dir=args.data_dir, cache_dir=args.cache_dir), progress=True)
        data, test = prep.attack_data(), prep.test
        acc1 = accuracy(clean, test)
        t_clean = time.perf_counter() - t0
        t1 = time.perf_counter()
        # the GradPC target through the same cache (a hit makes target_seconds a load)
        target, tinfo = make_target("gradpc", victim.clean_model(), data.val,
                                    {"eps_w": args.eps_w, "steps": args.pc_steps, "lr": args.pc_lr}, True,
                                    cache=as_cache(args.cache_dir))
        t_target = time.perf_counter() - t1
        tpath = out.with_name(f"{out.stem}_{model_name}_target.safetensors")
        save_model(tpath, target, {"model": model_name, "stage": "target:gradpc", "eps_w": str(args.eps_w)})
        reach = multiclass_reachability(predict_logits(target, data.train.x), data.train.y)
        entry = {"clean_accuracy": acc1, "clean_train_seconds": t_clean, "target_file": tpath.name,  # beside the JSON
                 "target_test_accuracy": accuracy(target, test), "target_seconds": t_target,
                 "target_relative_change": tinfo["relative_change"], "tau": reach.tau,
                 "tau_min_poisons": None if reach.tau == float("inf") else int(-(-reach.tau * len(data.train) // 1)),
                 "n_train": len(data.train), "goal_drop_at_3pct": GOALS[model_name], "rows": []}
        report["models"][model_name] = entry
        print(f"[{model_name}] clean {acc1:.2f} %, GradPC target {entry['target_test_accuracy']:.2f} % "
              f"({t_target:.1f} s), τ = {reach.tau:.4g}", file=sys.stderr, flush=True)
        fractions = [args.fraction] + ([f for f in args.lr_sweep if f != args.fraction] if model_name == "lr" else [])
        attack = build_attack("gc", {"target": str(tpath), "steps": steps, "lr": args.lr, "init": args.init})
        for frac in fractions:
            ta = time.perf_counter()
            ps = attack.poison(data, victim, frac, generator=torch_generator(args.seed, "attack"), progress=True)
            t_attack = time.perf_counter() - ta
            tr = time.perf_counter()
            retrained = victim.retrain(PoisonedDataset.combine(data.train, ps).dataset, progress="retrain")
            t_retrain = time.perf_counter() - tr
            acc2 = accuracy(retrained, test)
            rep = attack.assess(ps, retrained, test)
            i = ps.info
            row = {"fraction": frac, "n_poison": poison_count(frac, len(data.train)), "eps": i["eps"],
                   "passes_tau": i["eps_reaches_tau"], "tau_box": i.get("tau_box"), "tau_gauge": i.get("tau_gauge"),
                   "passes_tau_gauge": i.get("eps_reaches_tau_gauge"), "poisoned_accuracy": acc2, "accuracy_drop": acc1 - acc2,
                   "gc_attack_seconds": t_attack, "retrain_seconds": t_retrain, "initial_rel_grad_norm": i["initial_rel_grad_norm"],
                   "final_rel_grad_norm": i["final_rel_grad_norm"], "steps_run": i["steps_run"],
                   "grad_norm_trace": i["grad_norm_trace"], **rep,
                   "pixels_in_range": bool(ps.x.min() >= 0 and ps.x.max() <= 1)}
            entry["rows"].append(row)
            report["seconds"] = time.perf_counter() - t_start
            write_json(out, report)
            print(f"[{model_name}] ε={frac:g}: {acc1:.2f} → {acc2:.2f} % (drop {acc1 - acc2:.2f}), GC {t_attack:.1f} s, "
                  f"rel. grad norm {i['initial_rel_grad_norm']:.3f} → {i['final_rel_grad_norm']:.3f}, "
                  f"ε ≥ τ: {i['eps_reaches_tau']}, agreement with target {rep['retrained_target_agreement']:.1f} %",
                  file=sys.stderr, flush=True)
    report["seconds"] = time.perf_counter() - t_start
    write_json(out, report)
    print(f"wrote {out} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
