"""Spectral signatures (Tran, Li & Madry 2018, "Spectral signatures in backdoor attacks").

Threat model: the defender trains the victim on D and looks at its learned representation r_i (the
input of its classification head: the penultimate activations ``model.features(x)`` of
``nn``/``cnn``/``resnet18``, the flattened input for ``lr``), (N, D). For a user's own module
without ``features`` / ``head`` the fallback is the input of its last ``nn.Linear`` (captured by a
forward hook; see :mod:`poisonlab.defenses._grads`); a module without an ``nn.Linear`` its forward
pass calls is :class:`~poisonlab.errors.UnsupportedError`, checked on a freshly built victim before
any training. Inputs of any shape and bounds. Within each class c the representations are centred,
R_c − r̄_c, and each point is scored by its squared projection on the top right singular vector
v_c of that class matrix:

    score_i = ((r_i − r̄_{y_i})ᵀ v_{y_i})²

Poisons of one class leave a detectable trace along v_c. Tran et al. remove 1.5·ε per class; here
the one shared filter removes ``fraction`` of all points by global rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.types import Dataset
from ..errors import ConfigError
from ..training.victim import Victim
from ._grads import head_features, probe_head, top_right_singular_vector
from .base import Defense, DefenseConfig, register_defense


def spectral_scores(features: torch.Tensor, y: torch.Tensor, num_classes: int, *, method: str = "auto",
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """(N,) squared projections of class-centred features on each class's top singular vector."""
    feats = features.double()
    out = torch.zeros(len(feats), dtype=torch.float64, device=feats.device)
    for c in range(num_classes):
        members = (y == c).nonzero().squeeze(1)
        if len(members) < 2:
            continue
        centred = feats[members] - feats[members].mean(0, keepdim=True)
        v = top_right_singular_vector(centred, method=method, generator=generator)
        out[members] = (centred @ v) ** 2
    return out


@dataclass(frozen=True, kw_only=True)
class SpectralConfig(DefenseConfig):
    """Options of the spectral-signatures defense (Tran, Li & Madry 2018).

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points to remove (by global rank of the scores, not Tran et al.'s 1.5·ε per class), in
            [0, 1]. Default 0.03.
        svd: How the top right singular vector v_c of each class's centred representation matrix
            is computed: "exact" (``torch.linalg.svd``), "randomized" (block subspace iteration,
            Halko, Martinsson & Tropp 2011, started from the defense's generator) or "auto"
            (default: exact when min(n_c, D) <= 1024, else randomized). See
            :func:`poisonlab.defenses._grads.top_right_singular_vector`.
    """

    svd: str = "auto"  # "auto", "exact" or "randomized"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.svd not in ("auto", "exact", "randomized"):
            raise ConfigError(f"spectral: svd must be 'auto', 'exact' or 'randomized', got {self.svd!r}")


@register_defense("spectral")
class SpectralDefense(Defense[SpectralConfig]):
    summary = "remove points with large per-class spectral signature of the victim's features (Tran et al. 2018)"

    def check_supported(self, data: Dataset, victim: Victim) -> None:
        probe_head(victim, data, "spectral (it reads the victim's penultimate features)", trainable=False)

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> torch.Tensor:
        trained = self.trained_model(data, victim, model, progress)
        feats = head_features(trained, data.x)
        return spectral_scores(feats, data.y, data.num_classes, method=self.config.svd, generator=generator)
