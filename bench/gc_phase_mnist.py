"""The phase transition on MNIST LR: GC + retraining over ε around a reachable target's τ_gauge.

    python bench/gc_phase_mnist.py               # MNIST LR, the "reachable" target made for ε = 0.03, 9 values of ε
    python bench/gc_phase_mnist.py --quick       # digits, 5 victim epochs: a smoke test (writes to a temporary directory)

Issue #16, item 4 (the reachability paper's main experimental claim, here with pixels in [0, 1]).
One target family: the ``"reachable"`` maker's target for ε = ``--family-fraction`` (τ_gauge ≤ 0.8·ε
by construction). GC (plan labels, 600 Adam steps of 0.05, as bench/gc_reach.py) at ε from
0.2·τ_gauge to 4·τ_gauge (``--points`` log-spaced values), each followed by retraining the victim from
scratch with its recipe on D_tr ∪ D_p. Plotted against ε / τ_gauge: the residual (relative gradient
norm of the target over D_tr ∪ D_p), the retrained model's agreement with the target and its test
accuracy, with τ (any input, eq. 3.6) and τ_box marked beside τ_gauge.

Results: bench/results/gc_phase_mnist.json (rewritten after every ε) and gc_phase_mnist.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, quick_setup  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gc_reach import GC_OPTIONS, gc_and_retrain, lr_setup, reachable_target  # noqa: E402

from poisonlab.attacks.targets import load_target  # noqa: E402
from poisonlab.figures import new_figure, save_figure  # noqa: E402
from poisonlab.protocol import save_model, write_json  # noqa: E402
from poisonlab.protocol.reachability import threshold_report  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family-fraction", type=float, default=0.03, help="ε the 'reachable' target is made for (default 0.03)")
    ap.add_argument("--target-file", default=None, help="that target, saved before (e.g. bench/results/gc_reach_target.safetensors, "
                    "bench/gc_reach.py's for ε = 0.03) instead of searching it again")
    ap.add_argument("--low", type=float, default=0.2, help="smallest ε / τ_gauge (default 0.2)")
    ap.add_argument("--high", type=float, default=4.0, help="largest ε / τ_gauge (default 4)")
    ap.add_argument("--points", type=int, default=9, help="values of ε, log-spaced (default 9)")
    ap.add_argument("--gc-steps", type=int, default=GC_OPTIONS["steps"])
    ap.add_argument("--gc-lr", type=float, default=GC_OPTIONS["lr"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default="runs/bench_gc/cache", help="clean victim and target ('' for none)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "gc_phase_mnist.json"))
    args = ap.parse_args(argv)
    dataset, epochs, out, _ = quick_setup(args, "gc_phase_mnist")
    if args.quick:
        args.family_fraction, args.points, args.gc_steps = 0.5, 4, min(args.gc_steps, 100)
    t0 = time.perf_counter()
    prep, victim, test, acc1, gc_opts, cache_dir = lr_setup(args, dataset, epochs)
    data = prep.attack_data()
    if args.target_file:
        target, tinfo, t_target = load_target(args.target_file, victim.clean_model()), {"source": args.target_file}, 0.0
    else:
        target, tinfo, t_target = reachable_target(data, victim, args.family_fraction, cache_dir)
    th = threshold_report(target, prep)
    tau_gauge, tau_box, tau = th.tau_gauge, th.tau_box, th.tau
    ratios = np.geomspace(args.low, args.high, args.points)
    if (ratios * tau_gauge > 1).any():  # a poison fraction above 1 is no budget (digits' --quick target)
        print(f"ε/τ_gauge above {1 / tau_gauge:.3g} would need ε > 1: dropped {ratios[ratios * tau_gauge > 1].round(3).tolist()}",
              file=sys.stderr)
        ratios = ratios[ratios * tau_gauge <= 1]
    report = {"environment": environment(), "dataset": dataset, "model": "lr", "seed": args.seed, "clean_accuracy": acc1,
              "family": {"maker": "reachable", "fraction": args.family_fraction, "tau_gauge": tau_gauge, "tau_box": tau_box,
                         "tau": tau, "target_test_accuracy": th.target_test_accuracy, "maker_seconds_here": t_target,
                         "maker_cache": tinfo.get("cache"), "maker_seconds": tinfo.get("seconds"),
                         "source": tinfo.get("source")},
              "gc_options": gc_opts, "ratios": ratios.tolist(), "rows": []}
    print(f"target: {th.target_test_accuracy:.2f} % (clean {acc1:.2f}), τ = {tau:.4g}, τ_box = {tau_box:.4g}, "
          f"τ_gauge = {tau_gauge:.4g} ({t_target:.0f} s)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "target.safetensors"
        save_model(path, target, {"model": "lr", "stage": "target:reachable", "fraction": str(args.family_fraction)})
        for r in ratios:
            f = float(r * tau_gauge)
            row = {"ratio": float(r), **gc_and_retrain(data, victim, test, acc1, path, f, gc_opts, args.seed)}
            row["ratio_exact"] = row["eps"] / tau_gauge  # after rounding to a whole number of poisons
            report["rows"].append(row)
            report["seconds"] = time.perf_counter() - t0
            write_json(out, report)
            print(f"ε/τ_gauge = {row['ratio_exact']:.3f} (ε = {row['eps']:.4g}, {row['n_poison']} poisons): residual "
                  f"{row['residual']:.4f}, agreement {row['agreement']:.2f} %, accuracy {row['poisoned_accuracy']:.2f} "
                  f"(drop {row['accuracy_drop']:.2f}), GC {row['gc_seconds']:.1f} s, retrain {row['retrain_seconds']:.1f} s",
                  file=sys.stderr, flush=True)
    png = plot(report, out.with_suffix(".png"))
    report["seconds"] = time.perf_counter() - t0
    write_json(out, report)
    print(f"wrote {out} and {png} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


def plot(report: dict, path: Path) -> Path:
    """Residual, agreement and test accuracy against ε / τ_gauge (log x), τ and τ_box marked."""
    fam, rows = report["family"], report["rows"]
    x = [r["ratio_exact"] for r in rows]
    fig, ax = new_figure(1, 3, figsize=(13, 3.8))
    ax[0].loglog(x, [r["residual"] for r in rows], "o-")
    ax[0].axhline(0.05, color="grey", ls=":", label="residual 0.05 (goal)")
    ax[0].set(ylabel="‖g(D_tr ∪ D_p)‖ / ‖g(μ)‖ at the target", title="residual after GC")
    ax[1].semilogx(x, [r["agreement"] for r in rows], "o-")
    ax[1].axhline(97.0, color="grey", ls=":", label="97 % (goal)")
    ax[1].set(ylabel="agreement with the target (test, %)", title="retrained vs target")
    ax[2].semilogx(x, [r["poisoned_accuracy"] for r in rows], "o-", label="retrained on D_tr ∪ D_p")
    ax[2].axhline(report["clean_accuracy"], color="g", ls="--", label=f"clean {report['clean_accuracy']:.2f} %")
    ax[2].axhline(fam["target_test_accuracy"], color="r", ls="--", label=f"target {fam['target_test_accuracy']:.2f} %")
    ax[2].set(ylabel="test accuracy (%)", title="test accuracy")
    from matplotlib.ticker import NullFormatter

    for a in ax:
        a.xaxis.set_minor_formatter(NullFormatter())
        a.axvline(1.0, color="k", ls="--", lw=1, label="ε = τ_gauge")
        a.axvline(fam["tau_box"] / fam["tau_gauge"], color="m", ls=":", label=f"ε = τ_box ({fam['tau_box']:.4f})")
        if fam["tau"] > 0:
            a.axvline(fam["tau"] / fam["tau_gauge"], color="c", ls="-.", label=f"ε = τ ({fam['tau']:.4f})")
        a.set_xlabel(f"ε / τ_gauge (τ_gauge = {fam['tau_gauge']:.4f}{'; τ = 0' if fam['tau'] <= 0 else ''})")
        a.legend(fontsize=7)
    fig.suptitle(f"GC + retraining, {report['dataset']} LR, 'reachable' target for ε = {fam['fraction']:g}")
    return save_figure(fig, path, dpi=90)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sys.exit(main())
