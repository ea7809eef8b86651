"""Attacker generators L_θ: networks that map (image ⊕ one-hot label) to a poisoned image in [0, 1].

Thesis §2.6.1: a fully-connected autoencoder (three layers, leaky ReLU) for MNIST-like data and a
convolutional autoencoder (three conv + three transposed-conv layers) for colour images.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

GENERATORS: Registry[type] = Registry("generator")


@GENERATORS.register("fc_autoencoder")
class FCAutoencoder(nn.Module):
    """x: (N, C, H, W), y: (N,) -> (N, C, H, W) in [0, 1]. Input is flatten(x) ⊕ onehot(y)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (512, 128)) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        d = 1
        for s in self.input_shape:
            d *= s
        h1, h2 = hidden
        self.net = nn.Sequential(
            nn.Linear(d + self.num_classes, h1), nn.LeakyReLU(0.2),
            nn.Linear(h1, h2), nn.LeakyReLU(0.2),
            nn.Linear(h2, d),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        inp = torch.cat([x.flatten(1), F.one_hot(y, self.num_classes).to(x.dtype)], 1)
        return torch.sigmoid(self.net(inp)).view(-1, *self.input_shape)


@GENERATORS.register("conv_autoencoder")
class ConvAutoencoder(nn.Module):
    """Three conv + three transposed-conv layers; the label enters as ``num_classes`` constant planes."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 32) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        k = width
        self.encoder = nn.Sequential(
            nn.Conv2d(c + self.num_classes, k, 3, 1, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(k, 2 * k, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * k, 4 * k, 4, 2, 1), nn.LeakyReLU(0.2),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * k, 2 * k, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(2 * k, k, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(k, c, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        planes = F.one_hot(y, self.num_classes).to(x.dtype).view(n, -1, 1, 1).expand(n, self.num_classes, h, w)
        z = self.encoder(torch.cat([x, planes], 1))
        out = self.decoder(z)
        if out.shape[-2:] != (h, w):  # odd sizes: crop / pad back to the input size
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def build_generator(name: str, input_shape: Sequence[int], num_classes: int, **options) -> nn.Module:
    return GENERATORS.get(name)(tuple(input_shape), int(num_classes), **options)


def default_generator_name(input_shape: Sequence[int]) -> str:
    """Fully-connected for grey images (MNIST-like), convolutional for colour images."""
    return "conv_autoencoder" if int(input_shape[0]) == 3 else "fc_autoencoder"
