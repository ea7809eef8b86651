"""The box gauge's two formulations on the gradients the reachable-target search meets (MNIST, LR).

    python bench/box_gauge_lp.py            # MNIST LR, ε = 3 %, the maker's default search (≈ 2 min)
    python bench/box_gauge_lp.py --quick    # digits, 5 victim epochs, ε = 0.5: a smoke test

``linear_box_gauge`` solves min Σ c_kl either as written (``formulation="pairs"``: C(C−1)·(d+1)
variables, 70 650 on MNIST) or in the pair masses alone (``"cuts"``: 90 variables, one row per class
subset, by Hoffman's circulation theorem). This script runs the ``"reachable"`` target maker on its
defaults (its LPs take the default, cut, form) and times both formulations on the clean victim's mean
gradient and on the found target's, checking that τ_gauge and the dual direction V agree.
Results: bench/results/box_gauge_lp.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import clean_victim, environment, quick_setup  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)

from poisonlab.attacks.gc import sum_gradient  # noqa: E402
from poisonlab.attacks.targets import TargetContext, make_target  # noqa: E402
from poisonlab.autodiff import named_params  # noqa: E402
from poisonlab.protocol import RunSpec, write_json  # noqa: E402
from poisonlab.theory.box import linear_box_gauge  # noqa: E402
from poisonlab.theory.linear import box_limits, linear_gradient_matrix  # noqa: E402


def gradient_matrix(model, train) -> torch.Tensor:
    """The clean mean cross-entropy gradient of a linear softmax model as its (C, d+1) matrix."""
    names, w = named_params(model)
    g = sum_gradient(model, names, w, train.x, train.y, 1.0 / len(train), 4096)
    return linear_gradient_matrix(model, names, g, train.input_shape)


def compare(G: torch.Tensor, limits) -> dict:
    row = {}
    for form in ("pairs", "cuts"):
        t = time.perf_counter()
        row[form] = linear_box_gauge(G, *limits, formulation=form)
        row[f"{form}_seconds"] = time.perf_counter() - t
    a, b = row.pop("pairs"), row.pop("cuts")
    row.update(tau_pairs=a.tau, tau_cuts=b.tau, tau_relative_difference=abs(a.tau - b.tau) / a.tau,
               direction_max_difference=float(np.abs(a.direction - b.direction).max()),
               plan_max_difference=float(np.abs(a.plan - b.plan).max()),
               speedup=row["pairs_seconds"] / row["cuts_seconds"])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None, help="default $POISONLAB_DATA (or ../shared/data)")
    ap.add_argument("--cache-dir", default=None, help="re-use / store the clean victim in this cache")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "box_gauge_lp.json"))
    args = ap.parse_args(argv)
    dataset, epochs, out, smoke = quick_setup(args, "box_gauge_lp")
    if smoke:
        args.fraction = 0.5  # the 5-epoch digits victim itself needs τ_gauge ≈ 0.32
    prep, clean, victim = clean_victim(RunSpec(dataset=dataset, model="lr", seed=args.seed, epochs=epochs,
                                                 data_dir=args.data_dir, cache_dir=args.cache_dir))
    data = prep.attack_data()
    t = time.perf_counter()
    target, info = make_target("reachable", victim.clean_model(), data.val, {}, progress=True,
                               context=TargetContext(data.train, data.bounds, args.fraction))
    search = time.perf_counter() - t
    d = data.train.x[0].numel()
    limits = box_limits(data.bounds, d, data.train.input_shape)
    rows = {name: compare(gradient_matrix(m, data.train), limits) for name, m in (("clean", clean), ("target", target))}
    report = {"environment": environment(), "dataset": dataset, "fraction": args.fraction, "seed": args.seed,
              "search_steps": len(info["trace"]), "search_seconds": search, "search_lp_seconds": info["lp_seconds"],
              "tau_gauge_target": info["tau_gauge"], "val_accuracy_target": info["val_accuracy_target"], **rows}
    write_json(out, report)
    for name, r in rows.items():
        print(f"{name}: τ_gauge {r['tau_cuts']:.6g} (pairs {r['tau_pairs']:.6g}); pairs {r['pairs_seconds']:.2f} s, "
              f"cuts {r['cuts_seconds']:.3f} s ({r['speedup']:.0f}×); max |ΔV| {r['direction_max_difference']:.1e}",
              file=sys.stderr)
    print(f"search: {report['search_steps']} LPs in {info['lp_seconds']:.2f} s of {search:.1f} s; wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
