"""Value checks of datasets and poison sets: the one place the data's contract is checked.

:func:`check_dataset` checks a dataset's values (finite, inside its bounds, labels in range);
:func:`validate` checks a poison set against the data it poisons — the same checks every attack's
contract enforces (:meth:`poisonlab.attacks.Attack.poison`), usable on poisons from anywhere
(a file, another library).
"""

from __future__ import annotations

import torch

from ..errors import ContractError, DataError
from .bounds import Bounds
from .types import AttackData, Dataset, ExperimentData, PoisonSet


def check_dataset(data: Dataset, what: str = "") -> Dataset:
    """Check the values of ``data``: finite inputs inside its bounds, labels in 0..num_classes−1.
    Returns ``data``; raises :class:`~poisonlab.errors.DataError` with the first problem found."""
    what = what or data.name or "dataset"
    Bounds.of(data.bounds, data.input_shape)
    if not torch.isfinite(data.x).all():
        raise DataError(f"{what}: inputs contain NaN or inf")
    if (gap := data.bounds.violation(data.x)) > 0:
        outside = int(((data.x < data.bounds.lower) | (data.x > data.bounds.upper)).flatten(1).any(1).sum())
        raise DataError(f"{what}: {outside} input(s) lie outside the bounds {data.bounds.describe()} (by up to {gap:.3g}); "
                        f"pass bounds=(lower, upper) that contain the data")
    if len(data.y) and (int(data.y.min()) < 0 or int(data.y.max()) >= data.num_classes):
        raise DataError(f"{what}: labels must be in 0..{data.num_classes - 1}, got {int(data.y.min())}..{int(data.y.max())}")
    return data


def validate(poisons: PoisonSet, data: AttackData | ExperimentData, *, n: int | None = None,
             clean_label: bool = False, who: str = "poisons") -> PoisonSet:
    """Check ``poisons`` against ``data`` (its D_tr and bounds); return them as float32 / int64 on the CPU.

    Checks: ``n`` points when given; each poison has one input's shape; finite inputs inside
    ``data.bounds``; labels in 0..C−1; ``source`` indices in −1..|D_tr|−1; with ``clean_label``, every
    poison has a source and keeps its label. Raises :class:`~poisonlab.errors.ContractError` naming
    ``who`` and the first violation.
    """
    train = data.train
    x = poisons.x.detach().to("cpu", torch.float32)
    y = poisons.y.detach().to("cpu", torch.int64)
    src = poisons.source_index.detach().to("cpu", torch.int64)
    if len(src) == 0:
        src = torch.full((len(x),), -1, dtype=torch.int64)
    count = len(x)
    if n is not None and count != n:
        raise ContractError(f"{who}: {count} inputs, the budget is exactly {n}")
    if len(y) != count or len(src) != count:
        raise ContractError(f"{who}: {count} inputs, {len(y)} labels and {len(src)} source indices")
    if tuple(x.shape[1:]) != tuple(train.x.shape[1:]):
        raise ContractError(f"{who}: inputs of shape {tuple(x.shape[1:])}, the data's are {tuple(train.x.shape[1:])}")
    if not torch.isfinite(x).all():
        raise ContractError(f"{who}: non-finite inputs")
    if (gap := train.bounds.violation(x)) > 0:
        raise ContractError(f"{who}: inputs outside the data's bounds {train.bounds.describe()} (by up to {gap:.3g})")
    if count and (int(y.min()) < 0 or int(y.max()) >= train.num_classes):
        raise ContractError(f"{who}: labels outside 0..{train.num_classes - 1}")
    if count and (int(src.min()) < -1 or int(src.max()) >= len(train)):
        raise ContractError(f"{who}: source indices outside D_tr (-1 = no source)")
    if clean_label:
        if (src < 0).any():
            raise ContractError(f"{who}: a clean-label attack must give every poison a source point")
        if not torch.equal(y, train.y[src]):
            raise ContractError(f"{who}: a clean-label attack changed labels")
    return PoisonSet(x, y, src, dict(poisons.info), dict(poisons.states))
