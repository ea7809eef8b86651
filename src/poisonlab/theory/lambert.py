"""The principal branch of Lambert's W on [−1/e, ∞) (real), the constant behind every threshold."""

from __future__ import annotations

import math

from scipy.special import lambertw


def lambert_w(x: float) -> float:
    """W₀(x): the solution w ≥ −1 of w·eᵂ = x, for real x ≥ −1/e. W(1/e) ≈ 0.278464542761074."""
    if not x >= -1.0 / math.e - 1e-15:
        raise ValueError(f"lambert_w needs x >= -1/e, got {x!r}")
    return float(lambertw(max(x, -1.0 / math.e), 0).real)
