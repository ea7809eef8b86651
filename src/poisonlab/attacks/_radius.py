"""The optional L∞ constraint shared by attacks that perturb source inputs (``radius`` option):
poisons stay within ``radius`` of their source input *and* inside the data's bounds
(:meth:`poisonlab.data.bounds.Bounds.project_linf`, the one projection). ``radius=None`` = no ball.

A radius is in the data's own units: for images in [0, 1] a pixel distance (8/255 is the usual
budget), for standardised tabular features a distance in standard deviations.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.bounds import Bounds

__all__ = ["LinfProjectedGenerator", "clamp_box", "project"]


def project(x: torch.Tensor, source: torch.Tensor, radius: float | None, bounds: Bounds) -> torch.Tensor:
    """Onto {‖x − source‖_∞ ≤ radius} ∩ bounds (``radius=None``: onto the bounds only)."""
    return bounds.project_linf(x, source, radius)


def clamp_box(x: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """``bounds.clamp(x)`` (the same values) with ``torch.clamp``'s gradient, which passes in full at
    the boundary — for a projection *inside* an autograd graph, where inputs start on the box's faces
    (pixels at exactly 0 or 1) and an element-wise min/max would halve their gradient."""
    if bounds.is_scalar:
        return x.clamp(float(bounds.lower), float(bounds.upper))
    return torch.clamp(x, *bounds.on(x.device, x.dtype))  # moved to x's device once, then cached


class LinfProjectedGenerator(nn.Module):
    """A generator L_θ(x, y) followed by the projection onto {‖x' − x‖_∞ ≤ radius} ∩ bounds
    (sub-differentiable: clipped entries get zero gradient). Same parameters as the wrapped one."""

    def __init__(self, inner: nn.Module, radius: float, bounds: Bounds | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.radius = float(radius)
        self.bounds = bounds if bounds is not None else Bounds.unit()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bounds.project_linf(self.inner(x, y), x, self.radius)
