"""``poisonlab list``: what is registered."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered datasets, models, generators and attacks")
    p.set_defaults(handler=run)


def registered() -> dict[str, list[tuple[str, str]]]:
    """Every registered name of each kind with its one-line summary, plugins (entry points, and
    components registered in this process) included."""
    from ..attacks import ATTACKS
    from ..attacks.targets import TARGETS
    from ..data import DATASETS
    from ..defenses import DEFENSES
    from ..models import GENERATORS, VICTIMS

    return {
        "datasets": [(n, DATASETS.get(n).description) for n in DATASETS] + [("PATH.npz", "any npz with x_train y_train x_test y_test")],
        "models": [(n, VICTIMS.get(n).summary) for n in VICTIMS],
        "generators": [(n, (GENERATORS.get(n).__doc__ or "").strip().splitlines()[0]) for n in GENERATORS],
        "attacks": [(n, ATTACKS.get(n).summary) for n in ATTACKS],
        "defenses": [(n, DEFENSES.get(n).summary) for n in DEFENSES],
        "targets": [(n, TARGETS.get(n).summary) for n in TARGETS] + [("FILE.safetensors", "a saved target model")],
    }


def run(args: argparse.Namespace) -> int:
    for group, items in registered().items():
        print(f"{group}:")
        for name, desc in items:
            print(f"  {name:<18} {desc}")
    return 0
