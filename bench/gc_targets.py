"""Which GradPC targets can Gradient Canceling reach with 3 % poison? (MNIST, logistic regression)

    python bench/gc_targets.py                       # targets x {random, plan} labels at ε = 3 %, then the ε sweep
    python bench/gc_targets.py --quick               # digits, 5 victim epochs: a smoke test

Part 1. For each GradPC radius ε_w (relative L2, the thesis' convention) the clean victim is corrupted
into a target w and three necessary conditions are computed from D_tr alone: τ (thesis eq. 3.6, any
poison input), τ_box and the exact box gauge τ_gauge ≥ τ_box (``poisonlab.theory.box``, pixels in
[0, 1]). Then GC crafts ε·N poisons twice — labels of random clean points (``init=random``) and in the
gauge plan's label mix (``init=plan``) — and the victim is retrained from scratch with its recipe on
D_tr ∪ D_p. Rescaled copies of the ε_w = 0.5 target (same accuracy, τ(s·w) → 0 as s → 0) show which
condition binds.

Part 2 (the phase transition on MNIST). One mild target (``--sweep-eps-w``), GC with plan labels at
ε from below to above its τ_gauge: the mixed gradient norm GC reaches and the retrained model's
agreement with the target vs ε / τ_gauge.

Results: bench/results/gc_targets.json (rewritten after every row), figure gc_targets.png.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, clean_victim, quick_setup  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)

import torch  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.attacks.gradpc import corrupt  # noqa: E402
from poisonlab.data import PoisonedDataset  # noqa: E402
from poisonlab.protocol import RunSpec, save_model, write_json  # noqa: E402
from poisonlab.reporting.plots import new_figure, save_figure  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.training import accuracy  # noqa: E402



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps-w", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2, 0.5])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.2, 0.05, 0.01], help="rescalings of the largest ε_w target")
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("--steps", type=int, default=600, help="GC steps (default 600)")
    ap.add_argument("--lr", type=float, default=0.05, help="GC Adam step in pixel units (default 0.05)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=os.environ.get("POISONLAB_DATA"))
    ap.add_argument("--inits", nargs="+", default=["random", "plan"], choices=["random", "aligned", "plan"])
    ap.add_argument("--sweep-eps-w", type=float, default=0.02, help="target of the ε sweep (default 0.02)")
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.2],
                    help="ε values of the sweep (default 0.01 … 0.2)")
    ap.add_argument("--cache-dir", default=None, help="re-use / store the clean victim in this cache")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "gc_targets.json"))
    args = ap.parse_args(argv)
    dataset, epochs, out, _ = quick_setup(args, "gc_targets")
    t0 = time.perf_counter()
    prep, clean, victim = clean_victim(RunSpec(dataset=dataset, model="lr", seed=args.seed, epochs=epochs,
                                                 data_dir=args.data_dir, cache_dir=args.cache_dir))
    data, test = prep.attack_data(), prep.test
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

    def measure(target: torch.nn.Module, fraction: float, init: str) -> dict:
        attack = build_attack("gc", {"target": str(tmp), "steps": args.steps, "lr": args.lr, "init": init})
        ta = time.perf_counter()
        ps = attack.poison(data, victim, fraction, generator=torch_generator(args.seed, "attack"))
        t_attack = time.perf_counter() - ta
        retrained = victim.retrain(PoisonedDataset.combine(data.train, ps).dataset)
        acc2 = accuracy(retrained, test)
        rep = attack.assess(ps, retrained, test)
        i = ps.info
        return {"init": init, "fraction": fraction, "eps": i["eps"], "target_test_accuracy": accuracy(target, test),
                "tau": i["tau"], "passes_tau": i["eps_reaches_tau"], "tau_box": i["tau_box"],
                "passes_tau_box": i["eps"] >= i["tau_box"], "tau_gauge": i["tau_gauge"],
                "passes_tau_gauge": i["eps_reaches_tau_gauge"], "gauge_label_mix": i["gauge_label_mix"],
                "poisoned_accuracy": acc2, "accuracy_drop": acc1 - acc2, "clean_grad_norm_at_target": i["clean_grad_norm"],
                "final_rel_grad_norm": i["final_rel_grad_norm"], "gc_seconds": t_attack,
                "retrained_target_agreement": rep["retrained_target_agreement"],
                "retrained_to_target_logit_distance": rep["retrained_to_target_logit_distance"]}

    def show(row: dict, what: str) -> None:
        print(f"{what} [{row['init']}] ε={row['eps']:.3g}: target {row['target_test_accuracy']:.2f} %, τ={row['tau']:.3g}, "
              f"τ_box={row['tau_box']:.3g}, τ_gauge={row['tau_gauge']:.3g} | {acc1:.2f} → {row['poisoned_accuracy']:.2f} "
              f"(drop {row['accuracy_drop']:.2f}), rel. grad norm → {row['final_rel_grad_norm']:.3f}, "
              f"agreement with target {row['retrained_target_agreement']:.1f} %", file=sys.stderr, flush=True)

    for eps_w, scale, target in targets:
        save_model(tmp, target, {"model": "lr", "stage": "target:gradpc", "eps_w": str(eps_w), "scale": str(scale)})
        for init in args.inits:
            row = {"eps_w": eps_w, "scale": scale, **measure(target, args.fraction, init)}
            report["rows"].append(row)
            report["seconds"] = time.perf_counter() - t0
            write_json(out, report)
            show(row, f"ε_w={eps_w:g} s={scale:g}")
    sweep_target, _ = corrupt(clean, data.val, eps_w=args.sweep_eps_w)
    save_model(tmp, sweep_target, {"model": "lr", "stage": "target:gradpc", "eps_w": str(args.sweep_eps_w)})
    report["sweep"] = {"eps_w": args.sweep_eps_w, "init": "plan", "rows": []}
    for frac in args.sweep:
        row = measure(sweep_target, frac, "plan")
        report["sweep"]["rows"].append(row)
        report["seconds"] = time.perf_counter() - t0
        write_json(out, report)
        show(row, f"sweep ε_w={args.sweep_eps_w:g}")
    print(f"wrote {plot(report, out.with_suffix('.png'))}", file=sys.stderr)
    tmp.unlink(missing_ok=True)
    print(f"wrote {out} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


def plot(report: dict, path: Path) -> Path:
    """Left: GC's final relative gradient norm at ε = 3 % per target (τ_gauge on the x axis), both
    inits. Right: the sweep — relative gradient norm and agreement with the target vs ε / τ_gauge."""
    from matplotlib.ticker import NullFormatter

    fig, (a, b) = new_figure(1, 2, figsize=(11, 4))
    for init, marker in (("random", "o"), ("aligned", "s"), ("plan", "^")):
        rows = [r for r in report["rows"] if r["init"] == init]
        if rows:
            a.scatter([r["tau_gauge"] for r in rows], [r["final_rel_grad_norm"] for r in rows], marker=marker, label=f"init {init}")
    a.axvline(report["fraction"], color="grey", ls="--", label=f"ε = {report['fraction']:g}")
    a.set_xscale("log")
    a.set_xlabel("τ_gauge of the target (log)")
    a.set_ylabel("‖g(mixed)‖ / ‖g(μ)‖ after GC")
    a.set_title(f"GradPC targets, ε = {report['fraction']:g}")
    a.legend(fontsize=8)
    sw = report.get("sweep", {}).get("rows", [])
    if sw:
        x = [r["eps"] / r["tau_gauge"] for r in sw]
        b.plot(x, [r["final_rel_grad_norm"] for r in sw], "o-", label="‖g(mixed)‖ / ‖g(μ)‖ after GC")
        b.plot(x, [1 - r["retrained_target_agreement"] / 100 for r in sw], "s-", label="1 − agreement(retrained, target)")
        b.axvline(1.0, color="grey", ls="--", label="ε = τ_gauge")
        b.set_xscale("log")
        b.set_yscale("log")
        b.xaxis.set_minor_formatter(NullFormatter())
        b.set_xlabel("ε / τ_gauge")
        b.set_title(f"sweep: target ε_w = {report['sweep']['eps_w']:g} ({sw[0]['target_test_accuracy']:.2f} %), plan labels")
        b.legend(fontsize=8)
    return save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
