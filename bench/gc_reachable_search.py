"""How much damage can 3 % of box-bounded poisons buy a *model-targeted* attack? (MNIST, LR)

    python bench/gc_reachable_search.py                  # ε = 3 %, 100 steps (≈ 5 min on one CPU)
    python bench/gc_reachable_search.py --quick          # digits, 5 victim epochs, ε = 0.5: a smoke test

A local search over target models: from the clean victim, normalised ascent steps on the D_v
cross-entropy (GradPC's objective), constrained by the box gauge τ_gauge(w) ≤ ε
(``poisonlab.theory.box.linear_box_gauge``, a necessary condition for pixels in [0, 1]). τ_gauge's
gradient in w comes from the LP's dual direction V (−V = ∂τ/∂g) and one Hessian-vector product of
the clean loss (∂τ/∂w = −H(w)·V, ``poisonlab.autodiff.dataset_hvp``). When
τ_gauge > 0.9·ε the step drops its component along ∂τ/∂w, and when τ_gauge > ε it moves
along −∂τ/∂w. The feasible iterate with the lowest D_v accuracy is kept, and GC (plan labels) then
aims at it at ε, followed by a retrain with the recipe.

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
from poisonlab.attacks.gc import sum_gradient  # noqa: E402
from poisonlab.theory.linear import box_gauge  # noqa: E402
from poisonlab.autodiff import dataset_hvp, flatten, functional_loss, named_params, unflatten, value_and_grad  # noqa: E402
from poisonlab.data import PoisonedDataset  # noqa: E402
from poisonlab.protocol import RunConfig, save_model, write_json  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.training import accuracy  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("--steps", type=int, default=100, help="search steps (one LP each)")
    ap.add_argument("--step", type=float, default=0.005, help="step length / ‖w_clean‖ (default 0.005)")
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
    prep, clean, victim = clean_victim(RunConfig(dataset=dataset, model="lr", seed=args.seed, epochs=epochs,
                                                 data_dir=args.data_dir, cache_dir=args.cache_dir))
    data, test = prep.data, prep.bundle.test
    acc1 = accuracy(clean, test)
    model = victim.clean_model()  # the target being searched, moved in place
    names, w = named_params(model)
    w0 = flatten(w).clone()
    n = len(data.train)
    loss = functional_loss(model, names)  # loss(params, x, y): the mean cross-entropy
    length = args.step * float(w0.norm())
    trace, best = [], None
    t_search = time.perf_counter()
    for it in range(args.steps + 1):
        names, w = named_params(model)
        g = sum_gradient(model, names, w, data.train.x, data.train.y, 1.0 / n, 8192)
        gauge = box_gauge(model, names, g)
        # ∂τ/∂w = (∂g/∂w)ᵀ ∂τ/∂g = H(w)·(−V): one Hessian-vector product of the clean mean loss
        V = torch.from_numpy(gauge.direction).to(w0.dtype)
        minus_v = flatten([-V[:, :-1], -V[:, -1]])  # [W | b] -> the (weight, bias) layout of ``names``
        d_tau = flatten(dataset_hvp(loss, w, unflatten(minus_v, w), data.train.x, data.train.y, chunk_size=8192))
        d_dmg = flatten(value_and_grad(loss, w, data.val.x, data.val.y)[1])
        val_acc = accuracy(model, data.val)
        trace.append([it, gauge.tau, val_acc])
        if gauge.tau <= args.fraction and (best is None or val_acc < best[0]):
            best = (val_acc, {k: v.clone() for k, v in model.state_dict().items()}, gauge.tau, it)
        if it % 10 == 0:
            print(f"step {it}: τ_gauge {gauge.tau:.4f}, D_v accuracy {val_acc:.2f} %", file=sys.stderr, flush=True)
        if it == args.steps:
            break
        unit = d_tau / d_tau.norm().clamp_min(1e-30)
        if gauge.tau > args.fraction:
            step = -unit
        elif gauge.tau > 0.9 * args.fraction:
            step = d_dmg - (d_dmg * unit).sum() * unit
        else:
            step = d_dmg
        new = flatten(w) + length * step / step.norm().clamp_min(1e-30)
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, v in zip(names, unflatten(new, w)):
                params[name].copy_(v)
    t_search = time.perf_counter() - t_search
    report = {"dataset": dataset, "model": "lr", "fraction": args.fraction, "steps": args.steps, "step": args.step,
              "seed": args.seed, "torch_threads": torch.get_num_threads(), "clean_accuracy": acc1,
              "search_seconds": t_search, "trace": trace}
    if best is None:
        report["best"] = None
        write_json(out, report)
        print("no feasible iterate", file=sys.stderr)
        return 0
    val_acc, state, tau, it = best
    model.load_state_dict(state)
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
