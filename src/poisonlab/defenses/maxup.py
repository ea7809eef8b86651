"""MaxUp (Gong, Ren, Liu & Liu 2021, "MaxUp: lightweight adversarial training with data augmentation
improves neural network training"; thesis Table 2.11, following github.com/Yunodo/maxup).

Threat model: a training-time defense; nothing is removed. For every training point the defender
draws ``m`` random perturbations x + δ_j, δ_j ~ N(0, diag(s²)), clipped back to the data's bounds
(``data.bounds``: [0, 1] for images, per-feature boxes for tabular data), and minimises the worst
case over them,

    min_w (1/N) Σ_i max_{j ≤ m} ℓ(f_w(clip(x_i + δ_ij)), y_i),

with the victim's own recipe and batch order (the one training loop with a ``batch_loss`` hook).
Its suspicion score (reported for detection metrics only) is that worst-case augmented loss under
the victim trained on D. Shapes: batch x (B, *input_shape) → m copies (m·B, *input_shape) →
losses (B,). Works for any victim module (it only needs the forward pass).

The noise scale. ``scale="span"`` (default): the standard deviation of feature j is
s_j = ``sigma`` · (upper_j − lower_j), a fraction of the feature's range, where that range is
finite; a feature with an infinite bound (unbounded) gets s_j = ``sigma`` in the data's own units.
On images in [0, 1] this is σ on the pixel scale (bit-identical to the pixel-scale definition); on
standardised features bounded by, say, [−4, 4] the default σ = 0.1 is 0.8 standard deviations.
``scale="absolute"``: s_j = ``sigma`` for every feature, in the data's units (for standardised
features: in standard deviations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.bounds import Bounds
from ..data.types import Dataset
from ..errors import ConfigError
from ..seeding import child_generator, device_generator, torch_generator
from ..training import train
from ..training.victim import Victim
from ..validation import check_int, check_number
from .base import Defense, DefenseConfig, register_defense

SCALES = ("span", "absolute")


def noise_std(bounds: Bounds, sigma: float, scale: str = "span") -> float | torch.Tensor:
    """The per-feature standard deviation s of MaxUp's perturbations (module docstring): a float
    when it is the same for every feature, else a float64 tensor broadcastable to one input."""
    if scale == "absolute":
        return float(sigma)
    if scale != "span":
        raise ConfigError(f"maxup: scale must be one of {list(SCALES)}, got {scale!r}")
    span = bounds.span().double()  # float64: sigma · 1.0 is exactly sigma (the pixel-scale definition)
    std = torch.where(torch.isfinite(span), span * float(sigma), torch.full_like(span, float(sigma)))
    if bool((std == std.flatten()[0]).all()):
        return float(std.flatten()[0])
    return std


def worst_case_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: int, sigma: float | torch.Tensor,
                    generator: torch.Generator, bounds: Bounds | None = None,
                    buffer: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) max over ``m`` Gaussian perturbations of the cross-entropy: standard deviation ``sigma``
    (a float, or per feature: a tensor broadcastable to one input), clipped to ``bounds`` (None: not
    clipped). The noise is drawn on ``generator``'s device: give one on ``x``'s device
    (:func:`~poisonlab.seeding.device_generator`), else every batch's noise is copied over.

    ``buffer``: optionally a flat tensor of at least m·``x.numel()`` elements (``x``'s dtype, on the
    generator's device) that the noise is drawn into, reused batch after batch (the same values as
    fresh noise: a new m·B-input buffer per batch costs page faults, ~20 % of the draw)."""
    shape = (m, *x.shape)
    if buffer is not None and buffer.numel() >= m * x.numel() and buffer.dtype == x.dtype \
            and buffer.device == generator.device:
        noise = buffer[: m * x.numel()].view(shape).normal_(generator=generator).to(x.device)
    else:
        noise = torch.randn(shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(x.device, x.dtype)
    # x + σ·noise in the noise's own buffer (m·B inputs are large, and new buffers cost page faults)
    xs = noise.mul_(sigma).add_(x)
    if bounds is not None:
        xs = bounds.clamp(xs) if xs.requires_grad else bounds.clamp_(xs)
    losses = F.cross_entropy(model(xs.reshape(m * len(x), *x.shape[1:])), y.repeat(m), reduction="none").view(m, len(x))
    return losses.max(0).values


@dataclass(frozen=True, kw_only=True)
class MaxUpConfig(DefenseConfig):
    """``m`` perturbations per point; ``sigma`` their scale, relative to each feature's range
    (``scale="span"``, default) or in the data's units (``scale="absolute"``); see the module docstring.

    MaxUp (Gong, Ren, Liu & Liu 2021) is a training-time defense: it removes nothing.

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig` (in [0, 1], default
            0.03); MaxUp removes no point, so the filter ignores it.
        m: Number of random Gaussian perturbations drawn per point and batch; the training loss
            (and the reported score) is the largest loss over them. A positive integer. Default 4.
        sigma: Standard deviation of the perturbations, >= 0: with ``scale="span"`` a fraction of
            each feature's range (upper − lower bound; in the data's units where that range is
            infinite), with ``scale="absolute"`` in the data's own units. 0 trains on the clean
            inputs. Default 0.1.
        scale: How ``sigma`` is read: "span" (default; relative to each feature's range, i.e. σ on
            the pixel scale for images in [0, 1]) or "absolute" (the same ``sigma`` for every
            feature, in the data's units).
    """

    m: int = 4
    sigma: float = 0.1
    scale: str = "span"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.m, "m", "maxup")
        check_number(self.sigma, "sigma", "maxup", allow_zero=True)
        if self.scale not in SCALES:
            raise ConfigError(f"maxup: scale must be one of {list(SCALES)}, got {self.scale!r}")


def _on(std: float | torch.Tensor, device: torch.device) -> float | torch.Tensor:
    """The per-feature standard deviation moved to ``device`` once (a float stays a float)."""
    return std.to(device) if isinstance(std, torch.Tensor) else std


def _std_info(std: float | torch.Tensor) -> dict[str, Any]:
    if isinstance(std, torch.Tensor):
        return {"noise_std_min": float(std.min()), "noise_std_max": float(std.max())}
    return {"noise_std_min": std, "noise_std_max": std}


@register_defense("maxup")
class MaxUpDefense(Defense[MaxUpConfig]):
    summary = "training-time: minimise the worst loss over m random perturbations of each point (Gong et al. 2021)"
    removes = False

    def fit(self, data: Dataset, victim: Victim, *, generator: torch.Generator, progress: bool = False) -> nn.Module:
        """The victim trained from scratch with the MaxUp objective (same init and batch order as its recipe)."""
        c: MaxUpConfig = self.config
        device = victim.device
        noise = device_generator(child_generator(generator), device)  # every batch's noise drawn on the device
        std = _on(noise_std(data.bounds, c.sigma, c.scale), device)
        model = victim.spec.build(victim.seed)
        batch = min(victim.spec.recipe.batch_size or len(data), len(data))
        buffer = torch.empty(c.m * batch * data.x[0].numel(), dtype=data.x.dtype, device=noise.device)
        return train(model, data, victim.spec.recipe, torch_generator(victim.seed, "batches"),
                     progress="maxup retrain" if progress else False,
                     batch_loss=lambda mdl, xb, yb: worst_case_loss(mdl, xb, yb, c.m, std, noise, data.bounds, buffer))

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        c: MaxUpConfig = self.config
        trained = self.trained_model(data, victim, model, progress)
        device = next(trained.parameters()).device
        noise = device_generator(child_generator(generator), device)
        std = _on(noise_std(data.bounds, c.sigma, c.scale), device)
        out = []
        with torch.no_grad():
            for i in range(0, len(data), 2048):
                xb = data.x[i : i + 2048].to(device)
                out.append(worst_case_loss(trained, xb, data.y[i : i + 2048].to(device), c.m, std, noise, data.bounds).cpu())
        scores = torch.cat(out) if out else torch.empty(0, device="cpu")
        return scores, {"scale": c.scale, **_std_info(std)}
