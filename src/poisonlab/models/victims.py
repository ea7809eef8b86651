"""Victim architectures by name: ``lr``, ``nn``, ``cnn``, ``resnet18`` (and, from ``extractors``,
``linear_probe:<extractor>`` / ``fine_tune:<extractor>``: a ``:`` passes one argument to the builder).

Every victim returns logits (N, num_classes). ``lr`` and ``nn`` take inputs of any shape
(N, *input_shape), flattened; ``cnn`` and ``resnet18`` need images (N, C, H, W) and raise
:class:`~poisonlab.errors.UnsupportedError` for any other input shape. A bad option value raises
:class:`~poisonlab.errors.ConfigError` with one line naming the model and the option.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError, UnsupportedError
from ..registry import Registry

VictimBuilder = Callable[..., nn.Module]
VICTIMS: Registry[VictimBuilder] = Registry("model")


def _flat_dim(shape: Sequence[int]) -> int:
    d = 1
    for s in shape:
        d *= int(s)
    return d


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened image."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(_flat_dim(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """The thesis' ``NN``: three fully-connected layers with leaky-ReLU activations."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (1000, 1000)) -> None:
        super().__init__()
        dims = [_flat_dim(input_shape), *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.01)]
        self.features = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CNN(nn.Module):
    """The thesis' ``CNN``: two conv layers (5x5, ReLU) with max-pooling and one fully-connected layer."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).shape[1]
        self.head = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR variant (3x3 stem, no initial max-pool), He et al. 2016."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 64) -> None:
        super().__init__()
        c = int(input_shape[0])
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = width
        for i, mult in enumerate((1, 2, 4, 8)):
            cout = width * mult
            for j in range(2):
                blocks.append(_BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.features = nn.Sequential(self.stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _options(name: str, given: dict, allowed: dict) -> dict:
    unknown = set(given) - set(allowed)
    if unknown:
        raise ConfigError(f"model {name!r} has no option(s) {sorted(unknown)}; valid: {sorted(allowed) or 'none'}")
    return {**allowed, **given}


def _as_positive_int(value, what: str) -> int:
    """``value`` as an int >= 1 (an integral float such as 1e3 counts); raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(what)
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 1:
        return int(value)
    raise ValueError(what)


def _positive_ints(name: str, option: str, value, *, length: int | None = None) -> tuple[int, ...]:
    """A model option that is a list of positive integers (one integer counts as a list of one)."""
    want = f"a list of {length} positive integers" if length else "a list of positive integers"
    items = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        if isinstance(items, (str, bytes)) or not items:
            raise ValueError
        out = tuple(_as_positive_int(v, option) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"model {name!r}: {option} must be {want}, got {value!r}") from None
    if length is not None and len(out) != length:
        raise ConfigError(f"model {name!r}: {option} must be {want}, got {value!r}")
    return out


def _positive_int(name: str, option: str, value) -> int:
    try:
        return _as_positive_int(value, option)
    except ValueError:
        raise ConfigError(f"model {name!r}: {option} must be a positive integer, got {value!r}") from None


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise UnsupportedError(f"model {name!r} is convolutional and needs image inputs of shape (C, H, W); "
                               f"got input shape {shape} (use 'lr', 'nn' or your own module for other data)")
    return shape


@VICTIMS.register("lr")
def _lr(input_shape, num_classes, **opts):
    _options("lr", opts, {})
    return LogisticRegression(input_shape, num_classes)


@VICTIMS.register("nn")
def _nn(input_shape, num_classes, **opts):
    o = _options("nn", opts, {"hidden": (1000, 1000)})
    return MLP(input_shape, num_classes, _positive_ints("nn", "hidden", o["hidden"]))


@VICTIMS.register("cnn")
def _cnn(input_shape, num_classes, **opts):
    o = _options("cnn", opts, {"channels": (16, 32)})
    channels = _positive_ints("cnn", "channels", o["channels"], length=2)
    return CNN(_image_shape("cnn", input_shape), num_classes, channels)


@VICTIMS.register("resnet18")
def _resnet18(input_shape, num_classes, **opts):
    o = _options("resnet18", opts, {"width": 64})
    width = _positive_int("resnet18", "width", o["width"])
    return ResNet18(_image_shape("resnet18", input_shape), num_classes, width)


def resolve_victim(name: str) -> tuple[VictimBuilder, str | None]:
    """The builder for ``name`` and its ``:``-argument, if any.

    ``"cnn"`` -> (cnn builder, None); ``"linear_probe:enc.safetensors"`` -> (linear_probe builder,
    ``"enc.safetensors"``). Only builders marked ``takes_argument`` accept an argument.
    """
    base, sep, arg = name.partition(":")
    builder = VICTIMS.get(base)
    if sep and not getattr(builder, "takes_argument", False):
        raise ConfigError(f"model {base!r} takes no ':' argument (got {name!r})")
    return builder, (arg if sep else None)


def build_victim(name: str, input_shape: Sequence[int], num_classes: int, **options) -> nn.Module:
    """Instantiate a registered victim architecture (random init from the global torch RNG)."""
    builder, arg = resolve_victim(name)
    if arg is None:
        return builder(tuple(input_shape), int(num_classes), **options)
    return builder(tuple(input_shape), int(num_classes), arg, **options)
