"""Slab defense (Steinhardt, Koh & Liang 2017; multiclass form of Koh, Steinhardt & Liang 2022).

Threat model: the defender removes the points that lie far from their class centroid *along the
direction that separates the classes*: with class centroids μ_c and their mean μ̄ = (1/C) Σ_c μ_c,

    score_i = |⟨x_i − μ_{y_i}, μ_{y_i} − μ̄⟩| / ‖μ_{y_i} − μ̄‖₂      (inputs flattened, (N, D))

For two classes μ_0 − μ̄ = (μ_0 − μ_1)/2, so this is exactly the binary slab |⟨x − μ_y, μ_1 − μ_0⟩|
up to the constant ‖μ_1 − μ_0‖. Centroids from the data (default) or a trusted reference set.
Inputs of any shape (flattened) and bounds, in the data's own units; the victim model is not used.
"""

from __future__ import annotations

import torch

from ..data.types import Dataset
from .base import register_defense
from .sphere import CentroidDefense


def slab_scores(x: torch.Tensor, y: torch.Tensor, mu: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """|⟨x_i − μ_{y_i}, u_{y_i}⟩| with u_c the unit vector along μ_c − mean of the present centroids."""
    present = torch.ones(len(mu), dtype=torch.bool, device=mu.device) if present is None else present
    centre = mu[present].mean(0)
    direction = mu - centre
    direction = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True).clamp_min(1e-12)
    return ((x.flatten(1).double() - mu[y]) * direction[y]).sum(1).abs()


@register_defense("slab")
class SlabDefense(CentroidDefense):
    summary = "remove the points farthest from their class centroid along the centroid difference (Steinhardt et al. 2017)"

    def centroid_scores(self, data: Dataset, mu: torch.Tensor) -> torch.Tensor:
        """:func:`slab_scores` with the mean over the classes present in ``data``."""
        present = torch.bincount(data.y, minlength=data.num_classes) > 0
        return slab_scores(data.x, data.y, mu, present)
