"""Victim architectures by name: ``lr``, ``nn``, ``cnn``, ``resnet18`` (and, from ``extractors``,
``linear_probe:<extractor>`` / ``fine_tune:<extractor>``: a ``:`` passes one argument to the builder).

Every victim returns logits (N, num_classes). ``lr`` and ``nn`` take inputs of any shape
(N, *input_shape), flattened; ``cnn`` and ``resnet18`` need images (N, C, H, W) and raise
:class:`~poisonlab.errors.UnsupportedError` for any other input shape. A bad option value raises
:class:`~poisonlab.errors.ConfigError` with one line naming the model and the option.
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
from abc import abstractmethod
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

import torch
from torch import nn

from ..component import Component
from ..errors import ConfigError, UnsupportedError
from ..options import config_to_dict
from ..registry import Registry


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


@dataclass(frozen=True, kw_only=True)
class ArchitectureConfig:
    """Base of every victim architecture's options (``-M KEY=VALUE``; none by default)."""


#: an architecture's config type: ``class NNArch(Architecture[NNConfig])``
A = TypeVar("A", bound=ArchitectureConfig)
T = TypeVar("T", bound=type)


class Architecture(Component[A]):
    """A victim architecture (a :class:`~poisonlab.component.Component`): its options (the type
    parameter's config class), :meth:`check_supported` on the data's input shape and :meth:`build`,
    a fresh ``nn.Module`` mapping inputs (N, *input_shape) to logits (N, num_classes).

    ``takes_argument = True``: the name takes one ``:`` argument (``linear_probe:<extractor>``),
    passed to the constructor as ``argument``."""

    kind: ClassVar[str] = "model"
    config_base: ClassVar[type] = ArchitectureConfig
    Config: ClassVar[type[ArchitectureConfig]]
    #: whether the name takes one ``:`` argument, e.g. ``linear_probe:<extractor>``
    takes_argument: ClassVar[bool] = False

    def __init__(self, config: ArchitectureConfig | None = None, *, argument: str | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        if argument is not None and not self.takes_argument:
            raise ConfigError(f"model {self.name!r} takes no ':' argument (got {self.name}:{argument})")
        #: the ``:`` argument of the name (``takes_argument``), else None
        self.argument = argument

    @classmethod
    def _given(cls, options: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        names = sorted(f.name for f in fields(cls.Config))
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(f"{what} has no option(s) {unknown}; valid: {', '.join(names) or 'none'}")
        return options

    def check_supported(self, input_shape: tuple[int, ...], num_classes: int) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~poisonlab.errors.UnsupportedError` (saying why) when this architecture cannot
        take inputs of ``input_shape``; called by :func:`build_victim` before :meth:`build`. Default: any."""

    @abstractmethod
    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """A fresh module (random init from the global torch RNG) for ``input_shape`` and ``num_classes``."""


def _function_architecture(name: str, fn: Callable[..., nn.Module]) -> type[Architecture]:
    """A builder function ``fn(input_shape, num_classes, opt=default, ...)`` as an :class:`Architecture`:
    its parameters after the first two become the config's fields (each needs a default)."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise TypeError(f"model {name!r}: a builder function takes (input_shape, num_classes) and its options as "
                        f"parameters with defaults, got {fn.__name__}{inspect.signature(fn)}")
    opts = []
    for p in params[2:]:
        if p.default is p.empty:
            raise TypeError(f"model {name!r}: option {p.name!r} of {fn.__name__} needs a default")
        hashable = getattr(type(p.default), "__hash__", None) is not None  # a list default: a fresh copy each time
        opts.append((p.name, Any, field(default=p.default) if hashable
                     else field(default_factory=functools.partial(copy.deepcopy, p.default))))
    config = make_dataclass(f"{fn.__name__.strip('_<>')}Config", opts, bases=(ArchitectureConfig,), frozen=True, kw_only=True)

    def build(self: Architecture, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return fn(input_shape, num_classes, **config_to_dict(self.config))

    def body(ns: dict[str, Any]) -> None:
        ns.update(build=build, __wrapped__=fn, __doc__=fn.__doc__, __module__=getattr(fn, "__module__", __name__),
                  summary=(fn.__doc__ or "").strip().split("\n")[0])

    return types.new_class(f"{fn.__name__.strip('_<>')}Architecture", (Architecture[config],), {}, body)  # type: ignore[valid-type]


def _accept(name: str, obj: Any) -> type[Architecture]:
    """What :data:`VICTIMS` stores: an :class:`Architecture` subclass (its ``name`` set), or a builder
    function made one (:func:`_function_architecture`)."""
    if isinstance(obj, type):
        if not issubclass(obj, Architecture):
            raise TypeError(f"model {name!r} must be a subclass of poisonlab.Architecture or a builder function, got {obj!r}")
        cls = obj
    elif callable(obj):
        cls = _function_architecture(name, obj)
    else:
        raise TypeError(f"model {name!r} must be a subclass of poisonlab.Architecture or a builder function, got {obj!r}")
    cls.name = name
    return cls


#: every victim architecture by name; filled by :func:`register_victim` and the ``poisonlab.victims`` entry points
VICTIMS: Registry[type[Architecture]] = Registry("model", group="poisonlab.victims", accept=_accept)


def register_victim(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Decorator (``pl.register_victim``): register a victim architecture under ``name`` — an
    :class:`Architecture` subclass, or a builder function ``f(input_shape, num_classes, opt=default, ...)``
    returning a fresh ``nn.Module`` (its defaulted parameters are the options). ``replace=True``
    replaces an architecture registered under that name."""
    return VICTIMS.register(name, replace=replace)


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


@dataclass(frozen=True, kw_only=True)
class NNConfig(ArchitectureConfig):
    """Options of ``nn``.

    Attributes:
        hidden: Widths of the hidden layers, a list of positive integers (one integer: one layer).
            Default (1000, 1000), the thesis' network.
    """

    hidden: tuple[int, ...] = (1000, 1000)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", _positive_ints("nn", "hidden", self.hidden))


@dataclass(frozen=True, kw_only=True)
class CNNConfig(ArchitectureConfig):
    """Options of ``cnn``.

    Attributes:
        channels: Output channels of the two conv layers, 2 positive integers. Default (16, 32).
    """

    channels: tuple[int, ...] = (16, 32)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", _positive_ints("cnn", "channels", self.channels, length=2))


@dataclass(frozen=True, kw_only=True)
class ResNet18Config(ArchitectureConfig):
    """Options of ``resnet18``.

    Attributes:
        width: Channels of the first stage (doubled at each of the three others), a positive integer.
            Default 64.
    """

    width: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", _positive_int("resnet18", "width", self.width))


@register_victim("lr")
class LRArchitecture(Architecture[ArchitectureConfig]):
    summary = "multinomial logistic regression on the flattened input (any input shape)"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return LogisticRegression(input_shape, num_classes)


@register_victim("nn")
class NNArchitecture(Architecture[NNConfig]):
    summary = "the thesis' NN: fully-connected layers with leaky-ReLU (any input shape; option hidden)"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return MLP(input_shape, num_classes, self.config.hidden)


class _ImageArchitecture(Architecture[A]):
    def check_supported(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        _image_shape(self.name, input_shape)


@register_victim("cnn")
class CNNArchitecture(_ImageArchitecture[CNNConfig]):
    summary = "the thesis' CNN: two 5x5 conv layers with max-pooling, one linear layer (images; option channels)"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return CNN(_image_shape(self.name, input_shape), num_classes, self.config.channels)


@register_victim("resnet18")
class ResNet18Architecture(_ImageArchitecture[ResNet18Config]):
    summary = "ResNet-18, CIFAR variant (images; option width)"

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return ResNet18(_image_shape(self.name, input_shape), num_classes, self.config.width)


def resolve_victim(name: str) -> tuple[type[Architecture], str | None]:
    """The architecture class for ``name`` and its ``:``-argument, if any.

    ``"cnn"`` -> (cnn's class, None); ``"linear_probe:enc.safetensors"`` -> (linear_probe's class,
    ``"enc.safetensors"``). Only architectures with ``takes_argument`` accept an argument.
    """
    base, sep, arg = name.partition(":")
    cls = VICTIMS.get(base)
    if sep and not cls.takes_argument:
        raise ConfigError(f"model {base!r} takes no ':' argument (got {name!r})")
    return cls, (arg if sep else None)


def build_victim(name: str, input_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """Instantiate a registered victim architecture (random init from the global torch RNG): its
    options checked, then :meth:`Architecture.check_supported` on ``input_shape``, then built."""
    cls, arg = resolve_victim(name)
    arch = cls(argument=arg, **options)
    shape = tuple(int(s) for s in input_shape)
    arch.check_supported(shape, int(num_classes))
    return arch.build(shape, int(num_classes))
