"""``poisonlab threshold``: the reachability threshold τ of a target model (no poisoning, no retraining).

τ = max{⟨W, G(μ)⟩ / W((c−1)/e), 0} (thesis eq. 3.6, last layer for networks, Theorem 4): below a
poison fraction τ no poison set, however crafted, makes the target a stationary point of retraining.
"""

from __future__ import annotations

import argparse
import json
import math

from ..api import threshold_spec
from ..reporting import format_table
from .target_cmd import add_target_command, run_config, target_options


def add_parser(sub) -> None:
    p = add_target_command(
        sub, "threshold", handler=run, help="reachability threshold τ of a target model (GradPC, reachable or a file)",
        description="Print τ (thesis eq. 3.6), the minimum number of poisons and whether --fraction passes this "
                    "necessary condition (for lr also τ_box and the box gauge τ_gauge).")
    p.add_argument("--save-target", metavar="FILE.safetensors", help="also save the target that was made")


def run(args: argparse.Namespace) -> int:
    options = target_options(args)
    report = threshold_spec(run_config(args), args.target, fraction=args.fraction, options=options, clean=args.clean,
                            save_target=args.save_target, progress=not args.quiet)
    # target_info last: the maker's own account (τ_gauge, seconds, cache)
    out = {"dataset": args.dataset, "model": args.model, "target": args.target,
           **{key: v for key, v in report.to_dict().items() if key != "target_info"}, "target_info": report.target_info}
    n, k = report.n_clean, report.n_poisons_at_fraction
    tau_box = out["tau_box"]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    rows = [
        ("target", f"{args.target} on {args.dataset}/{args.model}"),
        ("target test accuracy", f"{out['target_test_accuracy']:.2f} %"),
    ]
    if report.clean_test_accuracy is not None:
        rows.append(("clean test accuracy", f"{out['clean_test_accuracy']:.2f} %"))
    rows += [
        ("⟨W, G(μ)⟩ = E⟨h, p − y⟩", f"{out['inner_W_G']:.6g}"),
        ("threshold τ (poisons per clean point)", f"{out['tau']:.6g}" + ("  (unreachable)" if math.isinf(out['tau']) else "")),
        ("minimum number of poisons", f"{out['min_poisons']} of |D_tr| = {n}"),
        (f"fraction {args.fraction:g} ({k} poisons)", "passes (necessary condition)" if out["fraction_passes"]
         else "CANNOT reach the target"),
        ("‖g(μ)‖ at the target", f"{out['clean_grad_norm_at_target']:.6g}"),
    ]
    if tau_box is not None:
        rows += [
            ("box threshold τ_box (pixels in [0, 1])", f"{tau_box:.6g}"),
            ("box gauge τ_gauge (LP, ≥ τ_box)", f"{out['tau_gauge']:.6g}"),
            ("minimum number of box-bounded poisons", f"{out['min_poisons_box']} of |D_tr| = {n}"),
            (f"fraction {args.fraction:g}, box-bounded poisons", "passes (necessary condition)" if out["fraction_passes_gauge"]
             else "CANNOT reach the target"),
            ("label mix of the gauge plan", " ".join(f"{v:.2f}" for v in out["gauge_label_mix"] or [])),
        ]
    rows += [(f"maker: {key}", f"{v:.6g}" if isinstance(v, float) else str(v))
             for key, v in out["target_info"].items() if v is not None]  # τ_gauge, val accuracies, seconds, cache
    print(format_table(("", "value"), rows))
    return 0
