"""``poisonlab threshold``: the reachability threshold τ of a target model (no poisoning, no retraining).

τ = max{⟨W, G(μ)⟩ / W((c−1)/e), 0} (thesis eq. 3.6, last layer for networks, Theorem 4): below a
poison fraction τ no poison set, however crafted, makes the target a stationary point of retraining.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from ..autodiff import flatten, named_params
from ..data import poison_count
from ..reporting import format_table
from ..theory import min_poison_count, multiclass_reachability
from ..training import accuracy, predict_logits
from .target_cmd import add_victim_args, build_target, prepared


def add_parser(sub) -> None:
    p = sub.add_parser("threshold", help="reachability threshold τ of a target model (GradPC or a file)",
                       description="Print τ (thesis eq. 3.6), the minimum number of poisons and whether --fraction "
                                   "passes this necessary condition.")
    add_victim_args(p)
    p.add_argument("--target", default="gradpc", help="'gradpc' (default) or a target .safetensors file")
    p.add_argument("--fraction", type=float, default=0.03, help="poison fraction to check (default 0.03)")
    p.add_argument("--save-target", metavar="FILE.safetensors", help="also save the GradPC target")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def clean_gradient(model, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[list[str], torch.Tensor]:
    """g(μ): the mean loss gradient of ``model`` over (x, y), all parameters, flattened (with their names)."""
    from ..attacks.gc import sum_gradient

    names, w = named_params(model)
    return names, sum_gradient(model, names, w, x, y, 1.0 / len(x), chunk)


def run(args: argparse.Namespace) -> int:
    from ..attacks.gc import box_gauge, box_threshold
    from ..data.splits import check_fraction
    from ..protocol import save_model

    check_fraction(args.fraction)
    prep = prepared(args)
    target, clean, info = build_target(prep, args, args.target)
    if args.save_target:
        save_model(args.save_target, target, {"model": args.model, "stage": "target"})
    train = prep.data.train
    n = len(train)
    device = next(target.parameters()).device
    reach = multiclass_reachability(predict_logits(target, train.x), train.y)
    k_min = min_poison_count(reach.tau, n, reach.attained)
    k = poison_count(args.fraction, n)
    out = {
        "dataset": args.dataset, "model": args.model, "target": args.target,
        "target_test_accuracy": accuracy(target, prep.bundle.test),
        "clean_test_accuracy": accuracy(clean, prep.bundle.test) if clean is not None else None,
        "inner_W_G": reach.inner,
        "tau": reach.tau,
        "n_clean": n,
        "min_poisons": k_min if math.isfinite(k_min) else None,
        "fraction": args.fraction,
        "n_poisons_at_fraction": k,
        "fraction_passes": reach.reachable(args.fraction),
        "condition": "necessary (cross-entropy trace bound, eq. 3.6)",
    }
    names, g = clean_gradient(target, train.x.to(device), train.y.to(device))
    out["clean_grad_norm_at_target"] = float(torch.linalg.vector_norm(g))
    tau_box = box_threshold(target, names, g)  # linear victims only: poisons with pixels in [0, 1]
    out["tau_box"] = tau_box
    out["fraction_passes_box"] = None if tau_box is None else args.fraction >= tau_box
    gauge = box_gauge(target, names, g) if tau_box is not None else None  # the exact LP version (≥ τ_box)
    out["tau_gauge"] = None if gauge is None else gauge.tau
    out["fraction_passes_gauge"] = None if gauge is None else args.fraction >= gauge.tau
    out["min_poisons_box"] = None if gauge is None else min_poison_count(gauge.tau, n)
    out["gauge_label_mix"] = (gauge.label_mass / gauge.tau).tolist() if gauge is not None and 0 < gauge.tau < math.inf else None
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    rows = [
        ("target", f"{args.target} on {args.dataset}/{args.model}"),
        ("target test accuracy", f"{out['target_test_accuracy']:.2f} %"),
    ]
    if clean is not None:
        rows.append(("clean test accuracy", f"{out['clean_test_accuracy']:.2f} %"))
    rows += [
        ("⟨W, G(μ)⟩ = E⟨h, p − y⟩", f"{reach.inner:.6g}"),
        ("threshold τ (poisons per clean point)", f"{reach.tau:.6g}" + ("  (unreachable)" if math.isinf(reach.tau) else "")),
        ("minimum number of poisons", f"{out['min_poisons']} of |D_tr| = {n}"),
        (f"fraction {args.fraction:g} ({k} poisons)", "passes (necessary condition)" if out["fraction_passes"]
         else "CANNOT reach the target"),
        ("‖g(μ)‖ at the target", f"{out['clean_grad_norm_at_target']:.6g}"),
    ]
    if tau_box is not None:
        rows += [
            ("box threshold τ_box (pixels in [0, 1])", f"{tau_box:.6g}"),
            ("box gauge τ_gauge (LP, ≥ τ_box)", f"{gauge.tau:.6g}"),
            ("minimum number of box-bounded poisons", f"{out['min_poisons_box']} of |D_tr| = {n}"),
            (f"fraction {args.fraction:g}, box-bounded poisons", "passes (necessary condition)" if out["fraction_passes_gauge"]
             else "CANNOT reach the target"),
            ("label mix of the gauge plan", " ".join(f"{v:.2f}" for v in out["gauge_label_mix"] or [])),
        ]
    print(format_table(("", "value"), rows))
    return 0
