"""Which networks the linear-softmax theory applies to: :func:`as_linear_softmax`.

The box-bounded conditions of :mod:`poisonlab.theory.box` (τ_box, the box gauge) hold for a
*linear softmax model*: logits h = W·flatten(x) + b with one weight matrix W (C, d) and one bias
b (C,) as its only parameters, trained with cross-entropy. Any ``nn.Module`` that computes exactly
that qualifies — the registered ``lr`` victim, a bare ``nn.Linear`` on (N, d) inputs,
``nn.Sequential(nn.Flatten(), nn.Linear(d, C))``, or a user's own class — and nothing else does.
This module is the one place that decides it; the theory functions themselves take tensors only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

#: probe inputs per check (both signs, so a ReLU or a clamp after the linear layer shows)
_PROBES = 8


def _structurally_linear(model: nn.Module, weight: torch.Tensor) -> bool:
    """Without an input shape: the architectures known to compute W·flatten(x) + b."""
    # lazy: the models package is heavier than theory
    from ..models.victims import LogisticRegression

    if isinstance(model, LogisticRegression):
        return True
    if isinstance(model, nn.Linear):
        return True  # on (N, d) inputs, which is all a bare Linear can flatten-and-apply
    if isinstance(model, nn.Sequential):
        mods = list(model)
        return (len(mods) >= 1 and isinstance(mods[-1], nn.Linear)
                and all(isinstance(m, (nn.Flatten, nn.Identity)) for m in mods[:-1]))
    return False


@torch.no_grad()
def _computes_linear_map(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor,
                         input_shape: Sequence[int]) -> bool:
    """Does ``model(x) == flatten(x) @ weight.T + bias`` on a few seeded random inputs?"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(_PROBES, *input_shape, generator=g, dtype=torch.float64) * 2.0
    x = x.to(weight.device, weight.dtype)
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    except Exception:  # noqa: BLE001 - a model that cannot take such inputs is not this map
        return False
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (_PROBES, weight.shape[0]):
        return False
    expected = x.flatten(1) @ weight.T + bias
    tol = 1e-4 if weight.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-9
    scale = float(expected.abs().max()) + 1.0
    return bool(torch.isfinite(out).all()) and float((out - expected).abs().max()) <= tol * scale


def as_linear_softmax(model: nn.Module, input_shape: Sequence[int] | None = None) -> tuple[nn.Parameter, nn.Parameter] | None:
    """``(W, b)`` — the model's own weight (C, d) and bias (C,) parameters — when ``model`` is a
    linear softmax model, logits = W·flatten(x) + b; else ``None``.

    The model must have exactly these two parameters (C ≥ 2). With ``input_shape`` (one input's
    shape, d = its number of entries) any module qualifies that computes exactly that map, checked
    on a few seeded random inputs (in eval mode; no state changes, the global RNG untouched);
    without it only the architectures known to compute it do (the ``lr`` victim, ``nn.Linear``,
    ``nn.Sequential`` of ``Flatten`` / ``Identity`` then one ``Linear``). The returned tensors *are*
    the parameters, so their names are found by identity in ``model.named_parameters()``.
    """
    params = list(model.parameters())
    if len(params) != 2:
        return None
    weight = next((p for p in params if p.ndim == 2), None)
    bias = next((p for p in params if p.ndim == 1), None)
    if weight is None or bias is None or weight.shape[0] != bias.shape[0] or weight.shape[0] < 2:
        return None
    if input_shape is None:
        return (weight, bias) if _structurally_linear(model, weight) else None
    shape = tuple(int(s) for s in input_shape)
    if math.prod(shape) != weight.shape[1]:
        return None
    return (weight, bias) if _computes_linear_map(model, weight, bias, shape) else None


def linear_softmax_names(model: nn.Module, input_shape: Sequence[int] | None = None) -> tuple[str, str] | None:
    """The parameter names ``(weight_name, bias_name)`` of :func:`as_linear_softmax`, or ``None``."""
    lin = as_linear_softmax(model, input_shape)
    if lin is None:
        return None
    by_id = {id(p): n for n, p in model.named_parameters()}
    return by_id[id(lin[0])], by_id[id(lin[1])]


__all__ = ["as_linear_softmax", "linear_softmax_names"]
