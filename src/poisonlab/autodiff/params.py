"""Parameter trees as flat vectors, and THE functional convention of the second-order code.

The convention: a *functional* is ``f(params, *args) -> tensor``, where ``params`` is a tuple of
parameter tensors (what the routines differentiate, usually the model's parameters w) and ``args``
are further tensors — a batch ``x, y``, or, for mixed products and total gradients, the leader's
variables (poison inputs, generator outputs). Every routine of :mod:`poisonlab.autodiff` takes one
and calls it the same way:

* :func:`value_and_grad(f, params, *args) <value_and_grad>`  (f, ∇_w f)
* :func:`directional(f, params, v, *args) <directional>`     ⟨∇_w f, v⟩, per output (forward mode)
* :func:`~poisonlab.autodiff.hvp` ``(f, params, v, *args)``        ∇²_w f · v
* :func:`~poisonlab.autodiff.dataset_hvp` ``(f, params, v, *args)`` the same for a mean over large ``args``, in chunks
* :func:`~poisonlab.autodiff.inverse_hvp` ``(f, params, b, *args)`` (∇²_w f + λI)⁻¹ b
* :func:`~poisonlab.autodiff.mixed_vjp` ``(f, params, v, *args, argnums=0)``  ∂/∂args[i] ⟨∇_w f, v⟩
* :func:`~poisonlab.autodiff.total_gradient` ``(f, ℓ, w, theta)`` with ``f(w, *theta)``, ``ℓ(w, *theta)``

A model becomes a functional with :func:`functional_model` (``logits(params, x)``) or
:func:`functional_loss` (``loss(params, x, y)``, cross-entropy) — the package's one use of
``torch.func.functional_call``: parameters not in ``names`` and buffers keep the model's values.
Shapes: ``x`` (N, *input_shape), ``y`` (N,) int64, ``params`` shaped like the named parameters.
"""

from __future__ import annotations

from typing import Callable, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

Params = tuple[torch.Tensor, ...]
#: ``f(params, *args) -> tensor`` (see the module docstring)
Functional = Callable[..., torch.Tensor]
REDUCTIONS = ("mean", "sum", "none")


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
    """(names, detached parameter tensors) of ``model``, optionally only the given names
    (default: every parameter with ``requires_grad``)."""
    all_params = dict(model.named_parameters())
    chosen = list(names) if names is not None else [n for n, p in all_params.items() if p.requires_grad]
    missing = [n for n in chosen if n not in all_params]
    if missing:
        raise KeyError(f"model has no parameter(s) {missing}; it has {list(all_params)}")
    return chosen, tuple(all_params[n].detach() for n in chosen)


def functional_model(model: nn.Module,
                     names: Sequence[str] | None = None) -> Callable[[Sequence[torch.Tensor], torch.Tensor], torch.Tensor]:
    """``logits(params, x)``: ``model(x)`` with the parameters ``names`` (default: the trainable ones,
    :func:`named_params`) replaced by the tensors ``params``, in that order. The other parameters
    (detached) and the buffers are the model's own, read when ``logits`` is called."""
    names = named_params(model, names)[0]
    chosen = set(names)
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in chosen}
    fixed.update(dict(model.named_buffers()))

    def logits(params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**fixed, **dict(zip(names, params))}, (x,))

    return logits


def functional_loss(model: nn.Module, names: Sequence[str] | None = None, *,
                    reduction: str = "mean") -> Callable[[Sequence[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(params, x, y)``: the cross-entropy of :func:`functional_model` ``(params, x)`` against
    the labels ``y`` — the mean over the batch (``reduction="mean"``), the sum, or one loss per point
    (``"none"``, shape (N,))."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    logits = functional_model(model, names)

    def loss(params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits(params, x), y, reduction=reduction)

    return loss


def value_and_grad(f: Functional, params: Sequence[torch.Tensor], *args: torch.Tensor) -> tuple[torch.Tensor, Params]:
    """(f(params, *args), ∇_w f) for scalar ``f``, by reverse mode; both detached (no graph kept)."""
    ps = tuple(p.detach().requires_grad_(True) for p in params)
    with torch.enable_grad():
        value = f(ps, *args)
        grads = torch.autograd.grad(value, ps)
    return value.detach(), tuple(grads)


def directional(f: Functional, params: Sequence[torch.Tensor], v: Sequence[torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """⟨∇_w f(params, *args), v⟩ for every output of ``f`` (e.g. one per point of a ``"none"``
    :func:`functional_loss`), by one forward-mode pass (``torch.func.jvp``); detached."""
    primals = tuple(p.detach() for p in params)
    return cast(torch.Tensor, jvp(lambda ps: f(ps, *args), (primals,), (tuple(v),))[1]).detach()
