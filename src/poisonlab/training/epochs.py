"""Epochs of minibatch steps over a fresh random order each, for the small loops that are not the
classification loop (:func:`.loop.train`): the tiny VAE's ELBO (:func:`poisonlab.generative.vae.train_vae`)
and SimCLR's contrastive loss (:func:`poisonlab.pretrain.simclr.train_simclr`) say what one step
does; the order, the loss bookkeeping and the progress bar are here."""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm


def shuffled_epochs(
    n: int,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    step: Callable[[torch.Tensor], torch.Tensor],
    *,
    full_batches: bool = False,
    desc: str = "train",
    progress: bool = False,
    leave: bool = True,
    digits: int = 4,
) -> list[float]:
    """Run ``epochs`` passes over ``n`` points in a new random order each (drawn from ``generator``,
    on its device). ``step(index)`` gets one batch's indices (1-D, on the generator's device), makes
    one optimiser step and returns the batch's mean loss as a 0-dim tensor. ``full_batches``: leave
    out a last partial batch (e.g. a contrastive loss that needs its negatives).

    Returns each epoch's mean loss per point. The losses stay on the device during the epoch and reach
    the host once per epoch (one sync), shown on the bar with ``digits`` decimals.
    """
    history: list[float] = []
    stop = n - batch_size + 1 if full_batches else n
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=leave, unit="ep")
    for _ in bar:
        perm = torch.randperm(n, generator=generator, device=generator.device)
        parts: list[torch.Tensor] = []  # batch loss sums, read on the host once per epoch
        count = 0
        for start in range(0, stop, batch_size):
            index = perm[start : start + batch_size]
            parts.append(step(index).detach() * len(index))
            count += len(index)
        total = float(torch.stack(parts).cpu().double().sum()) if parts else 0.0
        history.append(total / max(count, 1))
        bar.set_postfix(loss=f"{history[-1]:.{digits}f}")
    return history
