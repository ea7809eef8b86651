"""How much damage can 3 % of box-bounded poisons buy a *model-targeted* attack? (MNIST, LR)

    python bench/gc_reachable_search.py                  # ε = 3 %, 100 steps (≈ 5 min on one CPU)
    python bench/gc_reachable_search.py --quick          # digits, 5 victim epochs, ε = 0.5: a smoke test

A local search over target models — the library's ``"reachable"`` target maker
(``poisonlab.attacks.reachable_target``, gc's ``target: reachable``; this script only calls it):
from the clean victim, normalised ascent steps on the D_v cross-entropy (GradPC's objective),
constrained by the box gauge τ_gauge(w) ≤ limit·ε (``poisonlab.theory.box.linear_box_gauge``, a
necessary condition for pixels in [0, 1]; ``--limit 1`` by default here, the maker's default is 0.8).
The feasible iterate with the lowest D_v accuracy is kept, and GC (plan labels) then aims at it at ε,
followed by a retrain with the recipe. (bench/results/gc_reachable_search.json was written by this
script's earlier, in-script copy of the search: 100 steps of 0.005 with a plain step back above ε.)

This is a local search: it finds *some* of the most damaging targets that pass the necessary
condition, not a bound over all of them. Results: bench/results/gc_reachable_search.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, clean_victim, quick_setup  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)

import torch  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.attacks.targets import TargetContext, make_target  # noqa: E402
from poisonlab.autodiff import flatten, named_params  # noqa: E402
from poisonlab.data import PoisonedDataset  # noqa: E402
from poisonlab.protocol import RunSpec, save_model, write_json  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.training import accuracy  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("--steps", type=int, default=100, help="search steps (one LP each)")
    ap.add_argument("--step", type=float, default=0.005, help="step length / ‖w_clean‖ (default 0.005)")
    ap.add_argument("--limit", type=float, default=1.0, help="τ_gauge ≤ limit·ε (default 1: the condition itself)")
    ap.add_argument("--gc-steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="default $POISONLAB_DATA (or ../shared/data)")
    ap.add_argument("--cache-dir", default=None, help="re-use / store the clean victim in this cache")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "gc_reachable_search.json"))
    args = ap.parse_args(argv)
    dataset, epochs, out, smoke = quick_setup(args, "gc_reachable_search")
    if smoke:
        args.steps, args.gc_steps = min(args.steps, 10), min(args.gc_steps, 50)
        args.fraction = 0.5  # the 5-epoch digits victim itself needs τ_gauge ≈ 0.32
    t0 = time.perf_counter()
    prep, clean, victim = clean_victim(RunSpec(dataset=dataset, model="lr", seed=args.seed, epochs=epochs,
                                                 data_dir=args.data_dir, cache_dir=args.cache_dir))
    data, test = prep.attack_data(), prep.test
    acc1 = accuracy(clean, test)
    t_search = time.perf_counter()
    # the library's maker (poisonlab.attacks.reachable_target): τ_gauge ≤ limit·ε, here limit 1 (the necessary condition itself)
    model, info = make_target("reachable", victim.clean_model(), data.val,
                              {"steps": args.steps, "step": args.step, "limit": args.limit}, progress=True,
                              context=TargetContext(data.train, data.bounds, args.fraction))
    t_search = time.perf_counter() - t_search
    w0 = flatten(named_params(clean)[1])
    report = {"dataset": dataset, "model": "lr", "fraction": args.fraction, "steps": args.steps, "step": args.step,
              "limit": args.limit, "seed": args.seed, "torch_threads": torch.get_num_threads(), "clean_accuracy": acc1,
              "search_seconds": t_search, "trace": info["trace"]}
    tau, it, val_acc = info["tau_gauge"], info["best_step"], info["val_accuracy_target"]
    tpath = out.with_name(f"{out.stem}_target.safetensors")
    save_model(tpath, model, {"model": "lr", "stage": "target:reachable-search", "fraction": str(args.fraction)})
    attack = build_attack("gc", {"target": str(tpath), "steps": args.gc_steps, "lr": 0.05, "init": "plan"})
    ta = time.perf_counter()
    ps = attack.poison(data, victim, args.fraction, generator=torch_generator(args.seed, "attack"))
    t_gc = time.perf_counter() - ta
    retrained = victim.retrain(PoisonedDataset.combine(data.train, ps).dataset)
    acc2 = accuracy(retrained, test)
    rep = attack.assess(ps, retrained, test)
    report["best"] = {"step": it, "tau_gauge": tau, "val_accuracy": val_acc, "target_test_accuracy": accuracy(model, test),
                      "relative_distance_to_clean": float((flatten(named_params(model)[1]) - w0).norm() / w0.norm()),
                      "target_file": tpath.name, "gc_seconds": t_gc,
                      "gc_final_rel_grad_norm": ps.info["final_rel_grad_norm"],
                      "poisoned_accuracy": acc2, "accuracy_drop": acc1 - acc2,
                      "retrained_target_agreement": rep["retrained_target_agreement"]}
    report["seconds"] = time.perf_counter() - t0
    write_json(out, report)
    b = report["best"]
    print(f"best feasible target (step {it}): τ_gauge {tau:.4f}, test accuracy {b['target_test_accuracy']:.2f} % "
          f"(clean {acc1:.2f}); GC + retrain: {acc1:.2f} → {acc2:.2f} (drop {acc1 - acc2:.2f}), "
          f"rel. grad norm {b['gc_final_rel_grad_norm']:.3f}; wrote {out} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
