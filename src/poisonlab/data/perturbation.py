"""How far poisons moved from the clean points they were made from (no plotting here).

The numbers are on the data's own scale (the units of ``train.x``, inside ``train.bounds``): for
images in the pixel box that is the pixel scale 0–1, for standardised tabular data it is
standard deviations, and so on.
"""

from __future__ import annotations

import torch

from ..errors import DataError
from .types import Dataset, PoisonSet


def source_differences(poisons: PoisonSet, train: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, delta)``: the positions (in ``poisons``) of the poisons that have a source point,
    int64 (k,), and ``poison − source`` for each of them, (k, *input_shape), on the CPU.

    A poison has a source when its :attr:`PoisonSet.source` entry is ``>= 0``; it names a point of
    ``train``. Raises :class:`~poisonlab.errors.DataError` when a source index is out of range or a
    poison's shape differs from the training inputs'.
    """
    src = poisons.source.detach().cpu().to(torch.int64)
    index = torch.nonzero(src >= 0).flatten()
    if len(index) == 0:
        return index, poisons.x.detach().cpu()[:0]
    if tuple(poisons.x.shape[1:]) != tuple(train.x.shape[1:]):
        raise DataError(f"poisons have input shape {tuple(poisons.x.shape[1:])} but the training inputs "
                        f"{tuple(train.x.shape[1:])}; cannot compare poisons with their sources")
    chosen = src[index]
    if int(chosen.max()) >= len(train):
        raise DataError(f"poison source index {int(chosen.max())} is out of range for a training set of {len(train)} points")
    x = poisons.x.detach()[index.to(poisons.x.device)].cpu()
    s = train.x.detach()[chosen.to(train.x.device)].cpu()
    return index, x - s


def perturbation_stats(poisons: PoisonSet, train: Dataset) -> dict[str, float]:
    """``{"max_perturbation", "mean_perturbation"}``: the max and the mean of the absolute
    element-wise difference ``|poison − source|`` over every poison that has a source point in
    ``train`` (``source >= 0``), on the data's scale. Both are NaN when no poison has a source.

    >>> import torch
    >>> from poisonlab.data.types import Dataset, PoisonSet
    >>> train = Dataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), 2)
    >>> ps = PoisonSet(torch.tensor([[0.5, -1.0], [9.0, 9.0]]), torch.zeros(2, dtype=torch.int64), torch.tensor([2, -1]))
    >>> perturbation_stats(ps, train)
    {'max_perturbation': 1.0, 'mean_perturbation': 0.75}
    """
    _, delta = source_differences(poisons, train)
    if delta.numel() == 0:
        return {"max_perturbation": float("nan"), "mean_perturbation": float("nan")}
    a = delta.abs()
    return {"max_perturbation": float(a.max()), "mean_perturbation": float(a.mean())}


__all__ = ["perturbation_stats", "source_differences"]
