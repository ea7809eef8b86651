"""SimCLR contrastive pre-training (Chen et al. 2020, "A Simple Framework for Contrastive Learning
of Visual Representations"): two random augmentations of each unlabeled image, an MLP projection
head g on the encoder features, and the NT-Xent loss on the 2B projected views.

Shapes: images (B, C, H, W) in [0, 1] -> encoder features (B, D) -> projections (B, P).
Augmentations are batched tensor ops driven by a ``torch.Generator`` (reproducible, no torchvision).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..seeding import device_generator
from ..training.epochs import shuffled_epochs


def feature_dim(encoder: nn.Module) -> int:
    """The encoder's feature dimension (its ``feature_dim`` attribute; nn.Module types attributes loosely)."""
    return int(cast(int, encoder.feature_dim))


def augment(x: torch.Tensor, generator: torch.Generator, *, min_scale: float = 0.6, flip: bool = False,
            jitter: float = 0.4, noise: float = 0.02) -> torch.Tensor:
    """One random view of each image: random resized crop (area scale in [min_scale, 1], random
    position, bilinear), optional horizontal flip, brightness/contrast jitter of strength ``jitter``
    and Gaussian pixel noise; clamped to [0, 1]. x: (B, C, H, W) -> (B, C, H, W). The random numbers
    are drawn on ``generator``'s device: give one on ``x``'s (:func:`~poisonlab.seeding.device_generator`)."""
    b = x.shape[0]
    dev, dt = x.device, x.dtype

    def u(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(*shape, generator=generator, device=generator.device)).to(dev, dt)

    side = torch.sqrt(u(min_scale, 1.0, b))  # crop side as a fraction of the image side
    tx, ty = (1 - side) * u(-1.0, 1.0, b), (1 - side) * u(-1.0, 1.0, b)
    sx = side * torch.where(u(0.0, 1.0, b) < 0.5, -1.0, 1.0) if flip else side
    theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = sx, side, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if jitter > 0:
        mean = v.mean(dim=(1, 2, 3), keepdim=True)
        contrast = u(1 - jitter, 1 + jitter, b).view(b, 1, 1, 1)
        brightness = u(-jitter / 2, jitter / 2, b).view(b, 1, 1, 1)
        v = (v - mean) * contrast + mean + brightness
    if noise > 0:
        v = v + noise * torch.randn(v.shape, generator=generator, device=generator.device).to(dev, dt)
    return v.clamp(0.0, 1.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss (normalised temperature-scaled cross-entropy), mean over the 2B anchors.

    z1, z2: (B, P) projections of the two views; view i of z1 is the positive of view i of z2 and
    the other 2B − 2 views are negatives.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b, device=z.device), torch.arange(0, b, device=z.device)])
    return F.cross_entropy(sim, target)


class ProjectionHead(nn.Module):
    """g: (B, D) -> (B, P), Linear-ReLU-Linear as in SimCLR; discarded after pre-training."""

    def __init__(self, d: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def train_simclr(encoder: nn.Module, x: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
                 temperature: float, projection_dim: int, generator: torch.Generator, flip: bool,
                 device: torch.device, progress: bool | str = False) -> list[float]:
    """Train ``encoder`` in place with SimCLR on unlabeled images x (N, C, H, W); Adam optimiser.

    Returns the mean NT-Xent loss of every epoch. The projection head is initialised from the
    global RNG (callers fork and seed it) and thrown away. Runs on ``device``: the images are moved
    there once, batch order and augmentations are drawn there
    (:func:`~poisonlab.seeding.device_generator`; on the CPU the stream of ``generator``), and the
    loss reaches the host once per epoch.
    """
    d = feature_dim(encoder)
    head = ProjectionHead(d, d, projection_dim).to(device)
    encoder.to(device).train()
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    n = len(x)
    x = x.to(device)
    g = device_generator(generator, device)
    bs = min(batch_size, n)

    def step(index: torch.Tensor) -> torch.Tensor:
        xb = x[index]
        v1, v2 = augment(xb, g, flip=flip), augment(xb, g, flip=flip)
        loss = nt_xent(head(encoder(v1)), head(encoder(v2)), temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    history = shuffled_epochs(n, bs, epochs, g, step, full_batches=True,  # NT-Xent needs negatives
                              desc=progress if isinstance(progress, str) else "simclr", progress=bool(progress),
                              leave=False, digits=3)
    encoder.eval()
    if history and not math.isfinite(history[-1]):
        raise FloatingPointError("SimCLR loss became non-finite; lower the learning rate")
    return history
