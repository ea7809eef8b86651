"""Parameter trees as flat vectors, and a model's loss as a pure function of its parameters."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = tuple[torch.Tensor, ...]


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one 1-D vector (the CG solver works on these)."""
    return torch.cat([t.reshape(-1) for t in tensors]) if tensors else torch.empty(0)


def unflatten(vec: torch.Tensor, like: Sequence[torch.Tensor]) -> Params:
    """Inverse of :func:`flatten` for tensors shaped like ``like``."""
    out, i = [], 0
    for t in like:
        n = t.numel()
        out.append(vec[i : i + n].view_as(t))
        i += n
    if i != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, the parameters {i}")
    return tuple(out)


def named_params(model: nn.Module, names: Sequence[str] | None = None) -> tuple[list[str], Params]:
    """(names, detached parameter tensors) of ``model``, optionally only the given names."""
    all_params = dict(model.named_parameters())
    chosen = list(names) if names is not None else [n for n, p in all_params.items() if p.requires_grad]
    missing = [n for n in chosen if n not in all_params]
    if missing:
        raise KeyError(f"model has no parameter(s) {missing}; it has {list(all_params)}")
    return chosen, tuple(all_params[n].detach() for n in chosen)


def loss_of_params(
    model: nn.Module,
    names: Sequence[str],
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> Callable[..., torch.Tensor]:
    """``f(params) = mean cross-entropy of model(x) with parameters ``names`` replaced by ``params``.

    Parameters not in ``names`` and buffers keep their current values. With ``weight`` (N,) the mean
    is weighted (sum w_i l_i / sum w_i).
    """
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in set(names)}
    fixed.update(dict(model.named_buffers()))

    def f(*params: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        state = {**fixed, **dict(zip(names, params))}
        logits = functional_call(model, state, (x if inputs is None else inputs,))
        if weight is None:
            return F.cross_entropy(logits, y)
        return (F.cross_entropy(logits, y, reduction="none") * weight).sum() / weight.sum()

    return f
