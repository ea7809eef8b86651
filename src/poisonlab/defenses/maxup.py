"""MaxUp (Gong, Ren, Liu & Liu 2021, "MaxUp: lightweight adversarial training with data augmentation
improves neural network training"; thesis Table 2.11, following github.com/Yunodo/maxup).

Threat model: a training-time defense; nothing is removed. For every training point the defender
draws ``m`` random perturbations x + δ_j, δ_j ~ N(0, σ²I) clipped back to [0, 1], and minimises
the worst case over them,

    min_w (1/N) Σ_i max_{j ≤ m} ℓ(f_w(x_i + δ_ij), y_i),

with the victim's own recipe and batch order (the one training loop with a ``batch_loss`` hook).
Its suspicion score (reported for detection metrics only) is that worst-case augmented loss under
the victim trained on D. Shapes: batch x (B, C, H, W) → m copies (m·B, C, H, W) → losses (B,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.types import Dataset
from ..seeding import torch_generator
from ..training import train
from ..training.victim import Victim
from .base import Defense, DefenseConfig, _positive_float, _positive_int, child_generator, register_defense


def worst_case_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: int, sigma: float,
                    generator: torch.Generator) -> torch.Tensor:
    """(B,) max over ``m`` Gaussian perturbations (std ``sigma``, clipped to [0, 1]) of the cross-entropy."""
    noise = torch.randn((m, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
    xs = (x.unsqueeze(0) + sigma * noise).clamp(0.0, 1.0).reshape(m * len(x), *x.shape[1:])
    losses = F.cross_entropy(model(xs), y.repeat(m), reduction="none").view(m, len(x))
    return losses.max(0).values


@dataclass(frozen=True, kw_only=True)
class MaxUpConfig(DefenseConfig):
    m: int = 4
    sigma: float = 0.1  # std of the Gaussian perturbation on the [0, 1] pixel scale

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self.m, "maxup: m")
        _positive_float(self.sigma, "maxup: sigma", allow_zero=True)


@register_defense("maxup")
class MaxUpDefense(Defense):
    Config = MaxUpConfig
    summary = "training-time: minimise the worst loss over m random perturbations of each point (Gong et al. 2021)"
    removes = False

    def fit(self, data: Dataset, victim: Victim, *, generator: torch.Generator, progress: bool = False) -> nn.Module:
        """The victim trained from scratch with the MaxUp objective (same init and batch order as its recipe)."""
        c: MaxUpConfig = self.config  # type: ignore[assignment]
        noise = child_generator(generator)
        model = victim.spec.build(victim.seed)
        return train(model, data, victim.spec.recipe, torch_generator(victim.seed, "batches"),
                     progress="maxup retrain" if progress else False,
                     batch_loss=lambda mdl, xb, yb: worst_case_loss(mdl, xb, yb, c.m, c.sigma, noise))

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> torch.Tensor:
        c: MaxUpConfig = self.config  # type: ignore[assignment]
        trained = self.trained_model(data, victim, model, progress)
        noise = child_generator(generator)
        device = next(trained.parameters()).device
        out = []
        with torch.no_grad():
            for i in range(0, len(data), 2048):
                xb = data.x[i : i + 2048].to(device)
                out.append(worst_case_loss(trained, xb, data.y[i : i + 2048].to(device), c.m, c.sigma, noise).cpu())
        return torch.cat(out) if out else torch.empty(0)
