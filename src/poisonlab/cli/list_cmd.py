"""``poisonlab list``: what is registered."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered datasets, models, generators and attacks")
    p.set_defaults(handler=run)


def registered() -> dict[str, list[tuple[str, str]]]:
    from ..attacks import ATTACKS
    from ..data import DATASETS
    from ..models import GENERATORS, VICTIMS

    out = {
        "datasets": [(n, DATASETS.get(n).description) for n in DATASETS] + [("PATH.npz", "any npz with x_train y_train x_test y_test")],
        "models": [(n, (VICTIMS.get(n).__doc__ or "").strip()) for n in VICTIMS],
        "generators": [(n, (GENERATORS.get(n).__doc__ or "").strip().splitlines()[0]) for n in GENERATORS],
        "attacks": [(n, ATTACKS.get(n).summary) for n in ATTACKS],
    }
    try:  # layers added later register themselves here when present
        from ..defenses import DEFENSES

        out["defenses"] = [(n, getattr(DEFENSES.get(n), "summary", "")) for n in DEFENSES]
    except ImportError:
        pass
    return out


def run(args: argparse.Namespace) -> int:
    for group, items in registered().items():
        print(f"{group}:")
        for name, desc in items:
            print(f"  {name:<18} {desc}")
    return 0
