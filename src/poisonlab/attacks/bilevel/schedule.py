"""The per-round batch schedule of a bilevel attack: which clean, poison and validation points a
round sees, drawn from a generator that depends only on (base seed, epoch) so resumed runs match."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ...seeding import torch_generator


@dataclass(frozen=True)
class Round:
    """One round of a bilevel attack: the clean batch, the poisons it carries, a validation batch."""

    clean: torch.Tensor  # (B,) indices into D_tr
    poison: torch.Tensor  # (b,) indices into the poison set (0..P-1)
    val: torch.Tensor  # (V,) indices into D_v


def epoch_rounds(n_train: int, n_poison: int, n_val: int, batch_size: int, val_batch_size: int | None,
                 poisons_per_batch: str, generator: torch.Generator) -> list[Round]:
    """The rounds of one attack epoch.

    The clean set is shuffled into batches of ``batch_size`` as in victim training.
    ``poisons_per_batch="proportional"``: the poisons are shuffled and split evenly over the
    batches, so each batch carries ≈ ε·B poisons — the proportion the victim sees when it
    retrains on D_tr ∪ D_p; ``"all"``: every batch carries every poison (the poisons then weigh
    P/(B+P) in f instead of ε/(1+ε)); ``"weighted"``: every batch carries every poison, weighted
    so that they weigh ε/(1+ε) (the expected batch loss). Validation batches cycle through a shuffled D_v
    (``val_batch_size=None``: all of D_v every round).
    """
    perm = torch.randperm(n_train, generator=generator)
    clean = list(torch.split(perm, batch_size))
    if poisons_per_batch in ("all", "weighted"):
        pois = [torch.arange(n_poison)] * len(clean)
    else:
        pois = list(torch.tensor_split(torch.randperm(n_poison, generator=generator), len(clean)))
    vperm = torch.randperm(n_val, generator=generator)
    rounds = []
    for b, c in enumerate(clean):
        if val_batch_size is None or val_batch_size >= n_val:
            v = vperm
        else:
            start = (b * val_batch_size) % n_val
            v = torch.roll(vperm, -start)[:val_batch_size]
        rounds.append(Round(c, pois[b], v))
    return rounds


def epoch_generator(base_seed: int, epoch: int) -> torch.Generator:
    """The batch-order generator of one epoch: depends only on (base seed, epoch), so an attack
    resumed at epoch e draws exactly the batches an uninterrupted run would have drawn."""
    return torch_generator(base_seed, f"bilevel-epoch-{epoch}")


def chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))
