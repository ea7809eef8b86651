"""The attacker's 70 / 30 split and the single budget rule."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..validation import check_fraction
from .types import AttackData, Dataset

__all__ = ["TRAIN_FRACTION", "check_fraction", "poison_count", "split_train_val"]

TRAIN_FRACTION = 0.7


def split_train_val(data: Dataset, generator: torch.Generator, train_fraction: float = TRAIN_FRACTION) -> AttackData:
    """Split the clean training set into D_tr (``train_fraction``) and D_v with a seeded permutation."""
    if not 0.0 < train_fraction < 1.0:
        raise ConfigError(f"train_fraction must be in (0, 1), got {train_fraction}")
    perm = torch.randperm(len(data), generator=generator)
    n_train = int(round(train_fraction * len(data)))
    return AttackData(train=data.subset(perm[:n_train]), val=data.subset(perm[n_train:]))


def poison_count(fraction: float, n_train: int) -> int:
    """THE budget rule: ``round(fraction * n_train)`` with halves rounded up.

    ``fraction`` is the poison fraction ε_d of the clean training-set size |D_tr|; the attacker
    adds this many points (it never removes or edits clean ones).
    """
    check_fraction(fraction)
    return int(math.floor(fraction * n_train + 0.5))
