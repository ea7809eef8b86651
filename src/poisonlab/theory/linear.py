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
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError
from .box import BoxGauge, linear_box_gauge, linear_box_threshold

if TYPE_CHECKING:
    from ..data.bounds import Bounds

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
    x = torch.randn(_PROBES, *input_shape, generator=g, dtype=torch.float64, device=g.device) * 2.0
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




# ---------------------------------------------------------------------------- the box conditions of a model
def linear_gradient_matrix(model: nn.Module, names: list[str], g_clean: torch.Tensor,
                            input_shape: Sequence[int] | None = None) -> torch.Tensor | None:
    """g(μ) as the (C, d+1) matrix [W | b] when ``model`` is a linear softmax model
    (:func:`poisonlab.theory.linear.as_linear_softmax`; ``input_shape`` lets any module that computes
    W·flatten(x) + b qualify) and ``g_clean`` its full flattened mean gradient in ``names`` order
    (both parameters); else None."""
    lin = linear_softmax_names(model, input_shape)
    if lin is None or sorted(names) != sorted(lin):
        return None
    params = dict(model.named_parameters())
    parts, i = {}, 0
    for n in names:
        k = params[n].numel()
        parts[n] = g_clean[i : i + k]
        i += k
    if i != g_clean.numel():
        return None
    C, d = params[lin[0]].shape
    return torch.cat([parts[lin[0]].reshape(C, d), parts[lin[1]].reshape(C, 1)], 1).cpu()


def box_limits(bounds: Bounds | None, d: int, input_shape: Sequence[int] | None = None
               ) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
    """The data's box as the theory takes it (:mod:`poisonlab.theory.box`): two floats for scalar
    bounds (None: the pixel box [0, 1]), else (d,) float64 tensors per feature of the flattened input."""
    if bounds is None:
        return 0.0, 1.0
    if bounds.is_scalar:
        return float(bounds.lower), float(bounds.upper)
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if shape is None or math.prod(shape) != d:
        if bounds.lower.numel() == d and bounds.upper.numel() == d:
            return bounds.lower.double().reshape(-1), bounds.upper.double().reshape(-1)
        shape = tuple(bounds.lower.shape) if bounds.lower.numel() == d else tuple(bounds.upper.shape)
        if math.prod(shape) != d:
            raise ConfigError(f"per-feature bounds do not fit the model's {d} input features; pass the input shape")
    lo, hi = bounds.expanded(shape, dtype=torch.float64)
    return lo.reshape(-1), hi.reshape(-1)


def box_threshold(model: nn.Module, names: list[str], g_clean: torch.Tensor, bounds: Bounds | None = None,
                  input_shape: Sequence[int] | None = None) -> float | None:
    """τ_box (:func:`poisonlab.theory.box.linear_box_threshold`) over the box ``bounds`` (None: [0, 1])
    for a linear softmax victim with all its parameters in ``names``; else None (not applicable)."""
    G = linear_gradient_matrix(model, names, g_clean, input_shape)
    return None if G is None else linear_box_threshold(G, *box_limits(bounds, G.shape[1] - 1, input_shape))


def box_gauge(model: nn.Module, names: list[str], g_clean: torch.Tensor, bounds: Bounds | None = None,
              input_shape: Sequence[int] | None = None) -> BoxGauge | None:
    """The box gauge (:func:`poisonlab.theory.box.linear_box_gauge`: τ_gauge ≥ τ_box and its label
    plan) over ``bounds`` (None: [0, 1]) for a linear softmax victim with all its parameters in
    ``names``; else None (not applicable)."""
    G = linear_gradient_matrix(model, names, g_clean, input_shape)
    return None if G is None else linear_box_gauge(G, *box_limits(bounds, G.shape[1] - 1, input_shape))


def box_note(linear: bool, radius: float | None, model: nn.Module) -> str | None:
    """Why τ_box / τ_gauge are not reported (None when they are)."""
    if not linear:
        return (f"the target ({type(model).__name__}) is not a linear softmax model over all its gradient "
                "parameters (logits = W·flatten(x) + b)")
    if radius is not None:
        return "an L∞ radius constrains the poisons beyond the data's box"
    return None


def box_report(model: nn.Module, names: list[str], g_clean: torch.Tensor, bounds: "Bounds | None",
               input_shape: Sequence[int] | None, *, radius: float | None = None, gauge: BoxGauge | None = None,
               solve_gauge: bool = True) -> dict:
    """THE box-bounded part of a reachability report (used by ``gc`` and ``poisonlab threshold``):
    ``tau_box``, ``tau_gauge`` (solved here unless ``gauge`` is given or ``solve_gauge`` is False),
    ``gauge_label_mix`` — each None where it does not apply — and ``box_not_applicable``, the reason
    they are None (None when they apply). ``radius``: an L∞ ball on the poisons, which the box
    conditions do not model (they are then not reported)."""
    linear = linear_gradient_matrix(model, names, g_clean, input_shape) is not None
    note = box_note(linear, radius, model)
    if note is None and bounds is not None and bool(torch.isinf(bounds.lower).all() and torch.isinf(bounds.upper).all()):
        note = "the data is unbounded (every bound is infinite): no box condition"
    if note is not None:
        return {"tau_box": None, "tau_gauge": None, "gauge_label_mix": None, "box_not_applicable": note}
    if gauge is None and solve_gauge:
        gauge = box_gauge(model, names, g_clean, bounds, input_shape)
    tau_gauge = gauge.tau if gauge is not None and math.isfinite(gauge.tau) else None
    mix = (gauge.label_mass / gauge.tau).tolist() if gauge is not None and 0 < gauge.tau < math.inf else None
    return {"tau_box": box_threshold(model, names, g_clean, bounds, input_shape), "tau_gauge": tau_gauge,
            "gauge_label_mix": mix, "box_not_applicable": None}


__all__ = ["as_linear_softmax", "box_gauge", "box_limits", "box_note", "box_report", "box_threshold",
           "linear_gradient_matrix", "linear_softmax_names"]
