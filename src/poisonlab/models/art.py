"""ART (Adversarial Robustness Toolbox) bridge: a module as ART's ``PyTorchClassifier`` and
poisonlab :class:`~poisonlab.data.bounds.Bounds` ↔ ART ``clip_values``. ART is imported only when a
function needs it; without it they raise :class:`~poisonlab.errors.UnsupportedError` with the install
hint. Used by ART-based defenses (:mod:`poisonlab.defenses.art_activation`, ``art_spectral``) and by
:mod:`poisonlab.interop.art` (re-exported by :mod:`poisonlab.interop`).
"""

from __future__ import annotations

import contextlib
import importlib
from types import ModuleType
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data.bounds import Bounds
from ..errors import ConfigError, UnsupportedError

#: how to get ART with poisonlab (the ``art`` optional dependency in pyproject.toml)
ART_INSTALL_HINT = "pip install 'poisonlab[art]'"


def require_art(what: str = "this component") -> ModuleType:
    """The top-level ``art`` module, or :class:`UnsupportedError` naming ``what`` and the install hint.

    The top-level package is imported first on purpose: a missing (or masked) ``art`` fails here,
    even when some of its submodules happen to be cached already.
    """
    try:
        module = importlib.import_module("art")
        importlib.import_module("art.estimators.classification")
    except ImportError as exc:
        raise UnsupportedError(
            f"{what} needs the Adversarial Robustness Toolbox (package 'adversarial-robustness-toolbox'), "
            f"which cannot be imported ({exc}). Install it with: {ART_INSTALL_HINT}"
        ) from None
    return module


def art_clip_values(bounds: Bounds, input_shape: Sequence[int]) -> tuple[Any, Any] | None:
    """ART's ``clip_values`` for poisonlab ``bounds`` on inputs of ``input_shape``.

    Scalar bounds give a pair of floats; per-feature bounds give a pair of float32 arrays of
    ``input_shape`` (ART accepts arrays, one entry per feature, and clips element-wise); an
    unbounded box (every entry ±inf) gives ``None``, ART's "no clipping". Partly infinite per-feature
    bounds keep their infinities (ART only compares and clips with them).
    """
    lo, hi = bounds.lower, bounds.upper
    if bool(torch.isinf(lo).all() and torch.isinf(hi).all()):
        return None
    if bounds.is_scalar:
        return float(lo), float(hi)
    lo_full, hi_full = bounds.expanded(input_shape, device="cpu")  # ART takes numpy clip values
    return lo_full.cpu().numpy().astype(np.float32), hi_full.cpu().numpy().astype(np.float32)


def bounds_from_clip_values(clip_values: Any, input_shape: Sequence[int]) -> Bounds:
    """poisonlab :class:`Bounds` from ART ``clip_values`` (``None``: unbounded, ±inf).

    Array clip values may have ``input_shape``, broadcast to it, or be flat with one entry per
    feature (they are then reshaped to ``input_shape``).
    """
    shape = tuple(int(s) for s in input_shape)
    if clip_values is None:
        return Bounds(torch.tensor(float("-inf"), device="cpu"), torch.tensor(float("inf"), device="cpu"))
    try:
        lo, hi = clip_values
    except (TypeError, ValueError):
        raise ConfigError(f"clip_values must be None or a pair (min, max), got {clip_values!r}") from None

    def one(v: Any) -> np.ndarray:
        a = np.asarray(v, dtype=np.float64)
        if a.ndim and a.shape != shape and a.size == int(np.prod(shape)):
            try:
                np.broadcast_shapes(a.shape, shape)
            except ValueError:
                a = a.reshape(shape)
        return a

    return Bounds.of((one(lo), one(hi)), shape)


def _device_type(model: nn.Module) -> str:
    p = next(iter(model.parameters()), None)
    return "gpu" if p is not None and p.device.type == "cuda" else "cpu"


def art_classifier(model: nn.Module, input_shape: Sequence[int], num_classes: int, bounds: Bounds | None = None) -> Any:
    """``model`` as an ART ``PyTorchClassifier`` (cross-entropy loss, no optimizer, clip values from
    ``bounds``) on the device the model already lives on (ART would otherwise move it to a GPU)."""
    require_art("an ART classifier")
    from art.estimators.classification import PyTorchClassifier

    clip = art_clip_values(bounds, input_shape) if bounds is not None else None
    p = next(iter(model.parameters()), None)
    # ART puts a "gpu" classifier on torch.cuda.current_device(): make that the model's own GPU (cuda:N)
    on = torch.cuda.device(p.device) if p is not None and p.device.type == "cuda" else contextlib.nullcontext()
    with on:
        return PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(int(s) for s in input_shape),
            nb_classes=int(num_classes), clip_values=clip, device_type=_device_type(model),
        )


__all__ = ["ART_INSTALL_HINT", "art_classifier", "art_clip_values", "bounds_from_clip_values", "require_art"]
