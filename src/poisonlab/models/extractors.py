"""Pre-trained feature extractors and the downstream victims built on them (thesis chapter 4).

An *extractor* is an encoder φ: images (N, C, H, W) in [0, 1] -> features (N, D), saved as a
safetensors file whose metadata records the architecture and the input shape it was trained on
(``poisonlab.pretrain`` writes them). Two downstream scenarios are victims in the model registry:

* ``linear_probe:<extractor>`` — φ frozen (weights, and BatchNorm statistics if any), only the
  linear head ``nn.Linear(D, C)`` is trained;
* ``fine_tune:<extractor>`` — the whole network φ + head is trained, starting from φ; the encoder
  takes a smaller SGD step than the head (``encoder_lr_scale``, see :func:`auto_encoder_lr_scale`).

``<extractor>`` is a path to a ``.safetensors`` file or the cache key printed by ``poisonlab
pretrain`` (looked up in :func:`poisonlab.paths.extractor_dir`). When the downstream data differ from the
pre-training data in channels or size (transfer learning, e.g. CIFAR-10 -> Fashion-MNIST), an
:class:`InputAdapter` converts grey <-> RGB and resizes with ``F.interpolate`` in front of φ.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..paths import extractor_dir
from ..registry import Registry
from ..storage import file_sha256
from .victims import Architecture, ArchitectureConfig, ResNet18, register_victim

ENCODERS: Registry[type] = Registry("encoder")
METADATA_KEY = "poisonlab_extractor"


def add_standardiser(module: nn.Module, d: int) -> None:
    """Fixed per-feature affine map (h − mean)·scale, identity while pre-training; set from the
    pre-training images afterwards (:func:`set_standardiser`) so heads see unit-scale features."""
    module.register_buffer("feature_mean", torch.zeros(d))
    module.register_buffer("feature_scale", torch.ones(d))


@torch.no_grad()
def set_standardiser(encoder: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> None:
    """Set ``feature_mean``/``feature_scale`` to the mean and 1/std of the raw features of x (N, C, H, W)
    (std floored at 5 % of the mean std)."""
    mean, scale = encoder.get_buffer("feature_mean"), encoder.get_buffer("feature_scale")
    mean.zero_()
    scale.fill_(1.0)
    encoder.eval()
    dev = mean.device
    h = torch.cat([encoder(x[i:i + batch_size].to(dev)) for i in range(0, len(x), batch_size)])
    std = h.std(0)
    mean.copy_(h.mean(0))
    # floor: (nearly) dead ReLU features must not get huge scales that explode once fine-tuning revives them
    scale.copy_(1.0 / std.clamp_min(max(0.05 * std.mean().item(), 1e-6)))


@ENCODERS.register("conv")
class ConvEncoder(nn.Module):
    """Small CPU-sized conv encoder: three 3x3 conv blocks (ReLU, 2x2 max-pool) + global average pool.

    x: (N, C, H, W) in [0, 1] -> (N, channels[-1]) features (standardised after pre-training).
    """

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        c = int(input_shape[0])
        layers: list[nn.Module] = []
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(c, int(width), 3, padding=1), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c = int(width)
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = c
        add_standardiser(self, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x * 2.0 - 1.0) - self.feature_mean) * self.feature_scale


@ENCODERS.register("resnet18")
class ResNet18Encoder(nn.Module):
    """ResNet-18 (CIFAR variant) without its classifier: (N, C, H, W) -> (N, 8·width) features."""

    def __init__(self, input_shape: Sequence[int], width: int = 64) -> None:
        super().__init__()
        self.net = ResNet18(input_shape, 2, int(width)).features
        self.feature_dim = 8 * int(width)
        add_standardiser(self, self.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x * 2.0 - 1.0) - self.feature_mean) * self.feature_scale


def build_encoder(name: str, input_shape: Sequence[int], options: dict[str, Any] | None = None) -> nn.Module:
    cls = ENCODERS.get(name)
    try:
        return cls(tuple(int(s) for s in input_shape), **dict(options or {}))
    except TypeError as exc:
        raise ConfigError(f"encoder {name!r}: bad options {options!r} ({exc})") from None


class InputAdapter(nn.Module):
    """Maps downstream images (N, c, h, w) to the extractor's input shape (N, C, H, W).

    Channels: 1 -> 3 repeats the grey plane, 3 -> 1 takes the ITU-R 601 luma; sizes are matched by
    bilinear ``F.interpolate``. The identity when the shapes already agree. Values stay in [0, 1].
    """

    def __init__(self, data_shape: Sequence[int], extractor_shape: Sequence[int]) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.extractor_shape = tuple(int(s) for s in extractor_shape)
        c_in, c_out = self.data_shape[0], self.extractor_shape[0]
        if c_in != c_out and (c_in, c_out) not in ((1, 3), (3, 1)):
            raise ConfigError(f"cannot adapt {c_in}-channel images to a {c_out}-channel extractor")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c_in, c_out = self.data_shape[0], self.extractor_shape[0]
        if c_in == 1 and c_out == 3:
            x = x.expand(-1, 3, -1, -1)
        elif c_in == 3 and c_out == 1:
            luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * luma).sum(1, keepdim=True)
        if tuple(x.shape[-2:]) != self.extractor_shape[1:]:
            x = F.interpolate(x, size=self.extractor_shape[1:], mode="bilinear", align_corners=False)
        return x


class ExtractorVictim(nn.Module):
    """φ (with its input adapter) + a linear head. ``frozen=True`` is the linear-probe scenario.

    Exposes ``features`` (x -> (N, D)) and ``head`` (``nn.Linear(D, C)``) like the other victims.
    When fine-tuned, the encoder's SGD step is ``encoder_lr_scale`` times the recipe's ``lr`` (the
    head takes ``lr`` itself; :meth:`optimizer_groups`, used by THE training loop).
    """

    def __init__(self, encoder: nn.Module, adapter: InputAdapter, num_classes: int, *, frozen: bool,
                 encoder_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter
        self.frozen = frozen
        self.encoder_lr_scale = float(encoder_lr_scale)
        self.head = nn.Linear(int(cast(int, encoder.feature_dim)), int(num_classes))  # nn.Module types attributes loosely
        if frozen:
            self.encoder.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.adapter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def optimizer_groups(self, lr: float) -> list[dict[str, Any]]:
        """SGD parameter groups: the head at ``lr``, the (trainable) encoder at ``lr · encoder_lr_scale``."""
        groups: list[dict[str, Any]] = [{"params": list(self.head.parameters()), "lr": lr}]
        enc = [p for p in self.encoder.parameters() if p.requires_grad]
        if enc and self.encoder_lr_scale > 0:
            groups.append({"params": enc, "lr": lr * self.encoder_lr_scale})
        return groups

    def train(self, mode: bool = True) -> "ExtractorVictim":
        super().train(mode)
        if self.frozen:  # a frozen extractor keeps its BatchNorm statistics too
            self.encoder.eval()
        return self


# ---------------------------------------------------------------------------- files
def resolve_extractor(ref: str) -> Path:
    """A path to a ``.safetensors`` file, or a cache key (file ``<cache>/<key>.safetensors``)."""
    if not ref:
        raise ConfigError("empty extractor reference; use a .safetensors path or a `poisonlab pretrain` cache key")
    p = Path(ref).expanduser()
    if ref.endswith(".safetensors") or os.sep in ref or "/" in ref:
        path = p
    else:
        path = extractor_dir() / f"{ref}.safetensors"
    if not path.is_file():
        raise DataError(f"extractor {ref!r} not found at {path}; create it with `poisonlab pretrain`")
    return path


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(METADATA_KEY, "null"))
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise DataError(f"{path}: cannot read extractor weights ({exc})") from None
    if not isinstance(meta, dict) or not {"encoder", "input_shape"} <= set(meta):
        raise DataError(f"{path}: not a poisonlab extractor (no {METADATA_KEY!r} metadata)")
    return state, meta


def load_extractor(ref: str) -> tuple[nn.Module, dict[str, Any]]:
    """The encoder (eval mode, a fresh copy) and its metadata dict."""
    path = resolve_extractor(ref)
    state, meta = _read(str(path.resolve()), path.stat().st_mtime_ns)
    encoder = build_encoder(meta["encoder"], meta["input_shape"], meta.get("encoder_options"))
    try:
        encoder.load_state_dict({k: v.clone() for k, v in state.items()})
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit encoder {meta['encoder']!r} (written by another poisonlab "
                        f"version? re-run `poisonlab pretrain --force`): {str(exc).splitlines()[0]}") from None
    return encoder.eval(), dict(meta)


def extractor_fingerprint(model_name: str) -> str | None:
    """sha256 of the extractor file behind ``linear_probe:<ref>`` / ``fine_tune:<ref>`` (None for
    other names), so caches keyed on the model name notice a re-trained extractor."""
    base, sep, ref = model_name.partition(":")
    if not sep or base not in ("linear_probe", "fine_tune"):
        return None
    path = resolve_extractor(ref)
    return file_sha256(path)


def auto_encoder_lr_scale(encoder: nn.Module) -> float:
    """1 / median(feature_scale)²: the encoder step that undoes the standardiser's inflation.

    The fixed standardiser multiplies the features by s (median ≈ 17 for the benchmark's SimCLR
    encoders, up to ≈ 290 for nearly dead features): the head's gradient reaching the encoder is
    s times larger *and* the resulting change of the raw features is multiplied by s again, so with
    one learning rate the encoder moves its standardised features ≈ s² times faster than the head
    learns (SGD lr 0.1 on all parameters diverges to chance). Scaling the encoder's step by 1/s²
    (the median, robust to the dead features at the floor) restores the unstandardised encoder's
    step. 1.0 for an encoder whose standardiser was never set."""
    scale = getattr(encoder, "feature_scale", None)
    if scale is None or scale.numel() == 0:
        return 1.0
    return float(1.0 / scale.median().clamp_min(1e-12).item() ** 2)


def extractor_victim(extractor: str | None, input_shape: Sequence[int], num_classes: int, *, frozen: bool,
                     encoder_lr_scale: float | str = "auto") -> ExtractorVictim:
    if extractor is None:
        kind = "linear_probe" if frozen else "fine_tune"
        raise ConfigError(f"model {kind!r} needs an extractor: {kind}:<path.safetensors or cache key>")
    if encoder_lr_scale != "auto" and not (isinstance(encoder_lr_scale, (int, float))
                                           and not isinstance(encoder_lr_scale, bool) and encoder_lr_scale >= 0):
        raise ConfigError(f"fine_tune: encoder_lr_scale must be 'auto' or a number >= 0, got {encoder_lr_scale!r}")
    encoder, meta = load_extractor(extractor)
    adapter = InputAdapter(input_shape, meta["input_shape"])
    scale = auto_encoder_lr_scale(encoder) if encoder_lr_scale == "auto" else float(encoder_lr_scale)
    return ExtractorVictim(encoder, adapter, num_classes, frozen=frozen, encoder_lr_scale=scale)


@register_victim("linear_probe")
class LinearProbe(Architecture[ArchitectureConfig]):
    """linear_probe:<extractor> — frozen pre-trained extractor, trained linear head"""

    summary = "linear_probe:<extractor> — frozen pre-trained extractor, trained linear head"
    takes_argument = True

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return extractor_victim(self.argument, input_shape, num_classes, frozen=True)


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(ArchitectureConfig):
    """Options of ``fine_tune``.

    Attributes:
        encoder_lr_scale: The encoder's SGD step is encoder_lr_scale x lr: a number >= 0 or "auto"
            (1 / median standardiser scale²). Default "auto".
    """

    encoder_lr_scale: float | str = "auto"


@register_victim("fine_tune")
class FineTune(Architecture[FineTuneConfig]):
    """fine_tune:<extractor> — whole network trained, starting from the pre-trained extractor; the
    encoder's SGD step is encoder_lr_scale x lr (default 'auto': 1 / median standardiser scale²)"""

    summary = "fine_tune:<extractor> — whole network trained from the pre-trained extractor (option encoder_lr_scale)"
    takes_argument = True

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return extractor_victim(self.argument, input_shape, num_classes, frozen=False,
                                encoder_lr_scale=self.config.encoder_lr_scale)


def split_head(model: nn.Module) -> tuple[Any, nn.Linear]:
    """(feature map x -> (N, D), final linear layer) of a victim.

    Works for every victim with ``features``/``head`` (nn, cnn, resnet18, extractor victims) and
    for logistic regression (features = flattened pixels).
    """
    head = getattr(model, "head", None)
    feats = getattr(model, "features", None)
    if isinstance(head, nn.Linear) and feats is not None:
        return feats, head
    lin = getattr(model, "linear", None)
    if isinstance(lin, nn.Linear):
        return (lambda x: x.flatten(1)), lin
    raise ConfigError(f"{type(model).__name__} has no (features, linear head) split")
