"""D_tr, D_v and the poison sources D_p⁰ on the attack's device and in its dtype."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...data.types import AttackData, Dataset


@dataclass(frozen=True)
class AttackTensors:
    """D_tr, D_v and the poison sources D_p⁰ cast to the attack's device and dtype."""

    train: Dataset
    val: Dataset
    source_index: torch.Tensor  # (P,) indices into D_tr
    x0: torch.Tensor  # (P, *input_shape) initial poisons
    y0: torch.Tensor  # (P,)

    @staticmethod
    def build(data: AttackData, sources: torch.Tensor, device: torch.device, dtype: torch.dtype) -> "AttackTensors":
        """D_tr and D_v on ``device`` in ``dtype``, with D_p⁰ = the points ``sources`` (indices into
        D_tr; :func:`draw_sources` draws the usual random ones)."""
        train = Dataset(data.train.x.to(device, dtype), data.train.y.to(device), data.num_classes, data.train.name,
                        data.train.bounds)
        val = Dataset(data.val.x.to(device, dtype), data.val.y.to(device), data.num_classes, data.val.name, data.val.bounds)
        srcd = sources.to(device)
        return AttackTensors(train, val, sources.clone(), train.x[srcd].clone(), train.y[srcd].clone())


def draw_sources(n_train: int, n_poison: int, generator: torch.Generator) -> torch.Tensor:
    """D_p⁰: a seeded random subset of ``n_poison`` distinct indices into D_tr (the thesis takes
    D_tr[0:εN]; D_tr is itself a seeded random permutation)."""
    return torch.randperm(n_train, generator=generator)[:n_poison]
