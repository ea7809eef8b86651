"""Sphere defense (Steinhardt, Koh & Liang 2017, "Certified defenses for data poisoning attacks";
Koh, Steinhardt & Liang 2022).

Threat model: the defender removes the points farthest from the centroid of their own class,
score_i = ‖x_i − μ_{y_i}‖₂ in input space (inputs of any shape flattened to (N, D); distances in
the data's own units, whatever its bounds — standardise features of very different scales first,
or the largest-scale features dominate). The victim model is not used (any module). ``centroids="data"``
estimates μ_c from the (poisoned) set the defender sees; ``centroids="reference"`` uses a trusted
clean reference set (the "oracle" defender of Steinhardt et al.).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ..data.types import Dataset
from ..errors import ConfigError
from ..training.victim import Victim
from .base import Defense, DefenseConfig, register_defense


@dataclass(frozen=True, kw_only=True)
class CentroidConfig(DefenseConfig):
    """Options of the centroid defenses ``sphere`` and ``slab`` (Steinhardt, Koh & Liang 2017).

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points to remove, in [0, 1]. Default 0.03.
        centroids: Where the class centroids μ_c that the scores are measured from come from:
            "data" (default) — the class means of the (poisoned) set the defender sees; "reference"
            — the class means of the trusted clean ``reference`` set (the "oracle" defender of
            Steinhardt et al.; needs ``reference``, a class absent from it falls back to the data's
            mean).
    """

    centroids: str = "data"  # "data" or "reference"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.centroids not in ("data", "reference"):
            raise ConfigError(f"centroids must be 'data' or 'reference', got {self.centroids!r}")


def class_centroids(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) class means of flattened float64 inputs and a (C,) bool mask of the classes present."""
    flat = x.flatten(1).double()
    counts = torch.bincount(y, minlength=num_classes).double()
    sums = torch.zeros(num_classes, flat.shape[1], dtype=torch.float64, device=flat.device).index_add_(0, y.to(flat.device), flat)
    present = counts > 0
    return sums / counts.clamp_min(1.0).unsqueeze(1), present


def centroids_for(cfg: CentroidConfig, data: Dataset, reference: Dataset | None, what: str) -> torch.Tensor:
    """The (C, D) centroids the config asks for; a class absent from the source falls back to the data."""
    mu, present = class_centroids(data.x, data.y, data.num_classes)
    if cfg.centroids == "reference":
        if reference is None:
            raise ConfigError(f"{what}: centroids='reference' needs a trusted reference set")
        mu_ref, present_ref = class_centroids(reference.x, reference.y, data.num_classes)
        mu = torch.where(present_ref.unsqueeze(1), mu_ref, mu)
    return mu


class CentroidDefense(Defense[CentroidConfig]):
    """Base of the defenses that score each point against the centroid of its class (sphere, slab):
    the centroids the config asks for (:func:`centroids_for`), then :meth:`centroid_scores`. The
    victim model is not used."""


    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> torch.Tensor:
        return self.centroid_scores(data, centroids_for(self.config, data, reference, self.name))

    @abstractmethod
    def centroid_scores(self, data: Dataset, mu: torch.Tensor) -> torch.Tensor:
        """Suspicion scores (N,) of ``data`` given the (C, D) float64 class centroids ``mu``."""


@register_defense("sphere")
class SphereDefense(CentroidDefense):
    summary = "remove the points farthest from their class centroid (Steinhardt et al. 2017)"

    def centroid_scores(self, data: Dataset, mu: torch.Tensor) -> torch.Tensor:
        """‖x_i − μ_{y_i}‖₂ (inputs flattened)."""
        return torch.linalg.vector_norm(data.x.flatten(1).double() - mu[data.y], dim=1)
