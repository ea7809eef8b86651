"""THE victim training-recipe flags (``--epochs``, ``--lr``, ``--optimizer``, ...), one per field of
:class:`~poisonlab.training.TrainConfig` but the device, for every command that trains a victim."""

from __future__ import annotations

import argparse
from typing import Any

from ..training.loop import OPTIMIZERS, SCHEDULES

#: (flag, recipe field, type, help); a flag not given is None and leaves the recipe's default
RECIPE_FLAGS: tuple[tuple[str, str, Any, str], ...] = (
    ("--epochs", "epochs", int, "victim training epochs (default 100)"),
    ("--lr", "lr", float, "victim learning rate (default 0.1; Adam / AdamW usually want ~1e-3)"),
    ("--batch-size", "batch_size", int, "victim batch size (default: the dataset's, 1000 MNIST-like, 256 CIFAR-10)"),
    ("--optimizer", "optimizer", str, "victim optimiser (default sgd)"),
    ("--momentum", "momentum", float, "victim SGD momentum in [0, 1) (default 0)"),
    ("--weight-decay", "weight_decay", float, "victim L2 penalty, decoupled for adamw (default 0)"),
    ("--nesterov", "nesterov", bool, "victim Nesterov momentum (sgd with --momentum > 0; default off)"),
    ("--schedule", "schedule", str, "victim learning-rate schedule: cosine (to 0 over the epochs) or step "
                                    "(x --gamma every --step-size epochs) (default: constant)"),
    ("--step-size", "step_size", int, "--schedule step: the period in epochs (default max(1, epochs // 3))"),
    ("--gamma", "gamma", float, "--schedule step: the factor per period, in (0, 1] (default 0.1)"),
)
_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}


def add_recipe_args(p: argparse.ArgumentParser, *, note: str = "") -> None:
    """Add :data:`RECIPE_FLAGS` to ``p`` (every default None: the flag was not given). ``note`` is
    appended to each help text (e.g. ``sweep``: "every run")."""
    for flag, name, kind, text in RECIPE_FLAGS:
        help_text = f"{text}{note}"
        if kind is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            p.add_argument(flag, dest=name, type=kind, default=None, choices=_CHOICES.get(name), help=help_text)


def recipe_args(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe flags that were given, as {recipe field: value} (TrainConfig / RunSpec keys)."""
    return {name: value for _, name, _, _ in RECIPE_FLAGS if (value := getattr(args, name, None)) is not None}
