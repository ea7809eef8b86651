"""Input bounds: the box every input (clean or poisoned) of a dataset lives in.

Bounds belong to the data, not to a constant: images default to the pixel box [0, 1], standardised
tabular features have their own per-feature range. ``lower`` and ``upper`` are float32 tensors
broadcastable to *one* input (shape ``()`` for scalar bounds, or the input shape, or anything that
broadcasts to it); entries may be ``-inf`` / ``+inf`` for an unbounded feature. Every projection
an attack makes (:meth:`Bounds.clamp`, :meth:`Bounds.project_linf`) and the box-bounded theory
read them from here.

>>> b = Bounds.of((-1.0, 2.0), (3,))
>>> b.clamp(torch.tensor([[-5.0, 0.5, 9.0]])).tolist()
[[-1.0, 0.5, 2.0]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError


def _as_tensor(v: Any, what: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        t = v.detach().to("cpu", torch.float32)
    else:
        try:
            t = torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=torch.float32, device="cpu")
        except (TypeError, ValueError):
            raise DataError(f"bounds: {what} must be a number or an array of numbers, got {v!r}") from None
    if torch.isnan(t).any():
        raise DataError(f"bounds: {what} contains NaN")
    return t.clone()


@dataclass(frozen=True, eq=False)
class Bounds:
    """The box [lower, upper] of one input (see the module docstring).

    ``lower`` and ``upper`` live on the CPU; the projections use copies in the input's device and
    dtype, made once per (device, dtype) and kept (so an attack's loop on a GPU never re-uploads
    its bounds). The copies are not pickled.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    _moved: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"lower": self.lower, "upper": self.upper}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "lower", state["lower"])
        object.__setattr__(self, "upper", state["upper"])
        object.__setattr__(self, "_moved", {})

    @staticmethod
    def unit() -> "Bounds":
        """The pixel box [0, 1] (the default of every image dataset)."""
        return Bounds(torch.tensor(0.0, device="cpu"), torch.tensor(1.0, device="cpu"))

    @staticmethod
    def of(bounds: Any, input_shape: Sequence[int] | None = None) -> "Bounds":
        """Bounds from a :class:`Bounds` or a pair ``(lower, upper)`` of scalars or arrays.

        With ``input_shape`` the pair must broadcast to one input of that shape. Raises
        :class:`~poisonlab.errors.DataError` when it does not, or when some ``lower > upper``.
        """
        if isinstance(bounds, Bounds):
            b = bounds
        else:
            try:
                lo, hi = bounds
            except (TypeError, ValueError):
                raise DataError(f"bounds must be a pair (lower, upper), got {bounds!r}") from None
            b = Bounds(_as_tensor(lo, "lower"), _as_tensor(hi, "upper"))
        try:
            torch.broadcast_shapes(b.lower.shape, b.upper.shape)
        except RuntimeError:
            raise DataError(f"bounds: lower {tuple(b.lower.shape)} and upper {tuple(b.upper.shape)} do not broadcast") from None
        if input_shape is not None:
            shape = tuple(int(s) for s in input_shape)
            for t, what in ((b.lower, "lower"), (b.upper, "upper")):
                try:
                    if torch.broadcast_shapes(t.shape, shape) != shape:
                        raise RuntimeError
                except RuntimeError:
                    raise DataError(f"bounds: {what} of shape {tuple(t.shape)} does not broadcast to one input of shape {shape}") from None
        if (b.lower > b.upper).any():
            raise DataError("bounds: lower must be <= upper everywhere")
        return b

    # ------------------------------------------------------------------ properties
    @property
    def is_unit(self) -> bool:
        """True when the box is [0, 1] everywhere (the image default)."""
        return bool((self.lower == 0).all() and (self.upper == 1).all())

    @property
    def is_finite(self) -> bool:
        """True when every feature has a finite lower and upper bound."""
        return bool(torch.isfinite(self.lower).all() and torch.isfinite(self.upper).all())

    @property
    def is_scalar(self) -> bool:
        return self.lower.ndim == 0 and self.upper.ndim == 0

    def expanded(self, input_shape: Sequence[int], *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) as full tensors of ``input_shape``."""
        shape = tuple(int(s) for s in input_shape)
        lo, hi = self.on(torch.device(device) if device is not None else self.lower.device, dtype)
        return lo.expand(shape).contiguous(), hi.expand(shape).contiguous()

    def span(self) -> torch.Tensor:
        """upper − lower (broadcast shape)."""
        return self.upper - self.lower

    # ------------------------------------------------------------------ projections
    def on(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) on ``device`` in ``dtype``: moved once, then served from the cache."""
        key = (torch.device(device), dtype)
        hit = self._moved.get(key)
        if hit is None:
            hit = (self.lower.to(key[0], dtype), self.upper.to(key[0], dtype))
            if len(self._moved) < 8:  # a handful of (device, dtype) pairs per run
                self._moved[key] = hit
        return hit

    def _like(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.on(x.device, x.dtype)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` (N, *input_shape) or one input onto the box (element-wise clip)."""
        lo, hi = self._like(x)
        return torch.maximum(torch.minimum(x, hi), lo)

    def clamp_(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`clamp` in place (the same values, no new buffer: for large perturbed batches);
        returns ``x``. ``x`` must not need a gradient and must have the full batch shape."""
        if x.requires_grad:
            raise ValueError("Bounds.clamp_: x requires grad; use clamp")
        lo, hi = self._like(x)
        torch.minimum(x, hi, out=x)
        return torch.maximum(x, lo, out=x)

    def project_linf(self, x: torch.Tensor, center: torch.Tensor | None, radius: float | None) -> torch.Tensor:
        """Project onto {‖x − center‖_∞ ≤ radius} ∩ box (exact: both sets are boxes).
        ``radius=None`` (or no ``center``) projects onto the box only."""
        if radius is not None and center is not None:
            x = torch.maximum(torch.minimum(x, center + radius), center - radius)
        return self.clamp(x)

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """Map u in [0, 1] (e.g. a sigmoid output) affinely onto the box; needs finite bounds."""
        if not self.is_finite:
            raise DataError("bounds: mapping [0, 1] onto the box needs finite bounds")
        lo, hi = self._like(u)
        return lo + (hi - lo) * u

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Map x in the box affinely onto [0, 1] (features with upper == lower map to 0)."""
        if not self.is_finite:
            raise DataError("bounds: mapping the box onto [0, 1] needs finite bounds")
        lo, hi = self._like(x)
        span = hi - lo
        return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))

    # ------------------------------------------------------------------ checks
    def violation(self, x: torch.Tensor) -> float:
        """The largest distance of any entry of ``x`` outside the box (0 when inside)."""
        if x.numel() == 0:
            return 0.0
        lo, hi = self._like(x)
        return float(torch.maximum((lo - x).clamp_min(0), (x - hi).clamp_min(0)).max())

    def contains(self, x: torch.Tensor) -> bool:
        """True when every entry of ``x`` lies in the box (exactly, no tolerance)."""
        return self.violation(x) == 0.0

    def describe(self) -> str:
        """A short human-readable form, e.g. ``[0, 1]`` or ``per-feature [-3.2, 4.1]``."""
        lo, hi = float(self.lower.min()), float(self.upper.max())
        return f"[{lo:g}, {hi:g}]" if self.is_scalar else f"per-feature, within [{lo:g}, {hi:g}]"

    def to_json(self) -> dict[str, Any]:
        """JSON form: scalars as numbers, arrays as nested lists."""
        return {"lower": self.lower.tolist(), "upper": self.upper.tolist()}
