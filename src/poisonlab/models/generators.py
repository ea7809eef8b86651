"""Attacker generators L_θ: networks that map (input ⊕ one-hot label) to a poisoned input inside the
data's bounds.

Thesis §2.6.1: a fully-connected autoencoder (three layers, leaky ReLU) for MNIST-like data — and for
any input shape, tabular (N, d) included — and a convolutional autoencoder (three conv + three
transposed-conv layers) for colour images (N, C, H, W).

Both end in a sigmoid, i.e. in [0, 1]. Given the data's :class:`~poisonlab.data.bounds.Bounds`
(``bounds=``, finite) a generator reads its input as ``bounds.to_unit(x)`` and maps its output with
``bounds.from_unit``, so poisons land in the box; with the pixel box [0, 1] (or no bounds) both maps
are skipped and the network is exactly the thesis' one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.bounds import Bounds
from ..errors import ConfigError
from ..registry import Registry

GENERATORS: Registry[type] = Registry("generator")


def _box(bounds: Bounds | None) -> Bounds | None:
    """None for the unit box (no mapping); else finite bounds, checked."""
    if bounds is None or bounds.is_unit:
        return None
    if not bounds.is_finite:
        raise ConfigError(f"a generator's sigmoid output needs finite bounds to map onto, got {bounds.describe()}")
    return bounds


class _Bounded(nn.Module):
    """The shared [0, 1] <-> box maps of the generators (not parameters, not in the state dict)."""

    def _set_bounds(self, bounds: Bounds | None) -> None:
        self._bounds = _box(bounds)

    def _unit_in(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._bounds is None else self._bounds.to_unit(x)

    def _box_out(self, u: torch.Tensor) -> torch.Tensor:
        return u if self._bounds is None else self._bounds.from_unit(u)


@GENERATORS.register("fc_autoencoder")
class FCAutoencoder(_Bounded):
    """x: (N, *input_shape) — images (N, C, H, W) or features (N, d) — and y: (N,) -> (N, *input_shape)
    inside ``bounds`` (default [0, 1]). Input is flatten(x) ⊕ onehot(y)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (512, 128),
                 bounds: Bounds | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self._set_bounds(bounds)
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
        inp = torch.cat([self._unit_in(x).flatten(1), F.one_hot(y, self.num_classes).to(x.dtype)], 1)
        return self._box_out(torch.sigmoid(self.net(inp)).view(-1, *self.input_shape))


@GENERATORS.register("conv_autoencoder")
class ConvAutoencoder(_Bounded):
    """Three conv + three transposed-conv layers on images (N, C, H, W); the label enters as
    ``num_classes`` constant planes. Output inside ``bounds`` (default [0, 1])."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 32, bounds: Bounds | None = None) -> None:
        super().__init__()
        if len(tuple(input_shape)) != 3:
            raise ConfigError(f"generator 'conv_autoencoder' needs image inputs (C, H, W), got input shape {tuple(input_shape)}; "
                              "use 'fc_autoencoder'")
        c, h, w = (int(s) for s in input_shape)
        self.input_shape = (c, h, w)
        self.num_classes = int(num_classes)
        self._set_bounds(bounds)
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
        z = self.encoder(torch.cat([self._unit_in(x), planes], 1))
        out = self.decoder(z)
        if out.shape[-2:] != (h, w):  # odd sizes: crop / pad back to the input size
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return self._box_out(torch.sigmoid(out))


#: generators that need image inputs (N, C, H, W)
IMAGE_ONLY_GENERATORS: frozenset[str] = frozenset({"conv_autoencoder"})


def build_generator(name: str, input_shape: Sequence[int], num_classes: int, *, bounds: Bounds | None = None,
                    **options) -> nn.Module:
    """A registered generator for inputs of ``input_shape``; ``bounds`` (the data's, finite) is where
    its outputs land (default [0, 1]; passed on only when given and not the unit box, so a user's
    generator class without a ``bounds`` argument still builds for [0, 1] data)."""
    cls = GENERATORS.get(name)
    if bounds is not None and not bounds.is_unit:
        options = {**options, "bounds": bounds}
    return cls(tuple(input_shape), int(num_classes), **options)


def default_generator_name(input_shape: Sequence[int]) -> str:
    """Convolutional for colour images (3, H, W); fully-connected for everything else — grey images
    (MNIST-like) and non-image inputs such as tabular features (d,)."""
    shape = tuple(int(s) for s in input_shape)
    return "conv_autoencoder" if len(shape) == 3 and shape[0] == 3 else "fc_autoencoder"
