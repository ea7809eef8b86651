"""The optional L∞ constraint shared by attacks that perturb source images (``radius`` option):
poisons stay within ``radius`` of their source image, pixels in [0, 1]. ``radius=None`` = no ball."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..pretrain.invert import project

__all__ = ["LinfProjectedGenerator", "check_radius", "project"]


def check_radius(radius: float | None, what: str) -> None:
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius <= 1):
        raise ConfigError(f"{what}: radius must be in (0, 1] or null (unconstrained), got {radius!r}")


class LinfProjectedGenerator(nn.Module):
    """A generator L_θ(x, y) followed by the projection onto {||x' − x||_∞ ≤ radius} ∩ [0, 1]
    (sub-differentiable: clipped pixels get zero gradient). Same parameters as the wrapped one."""

    def __init__(self, inner: nn.Module, radius: float) -> None:
        super().__init__()
        self.inner = inner
        self.radius = float(radius)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return project(self.inner(x, y), x, self.radius)
