"""Pre-train a feature extractor once, save it as safetensors, and find it again by cache key.

Methods: ``simclr`` (self-supervised, labels unused; :mod:`.simclr`) and ``supervised`` (encoder +
linear head trained with cross-entropy by THE training loop ``poisonlab.training.train``; the head
is discarded). The file stores only the encoder's weights; its safetensors metadata holds the
config, the encoder architecture and the input shape, so ``linear_probe:<key>`` can rebuild it.
The cache key is ``<dataset>-<method>-<encoder>-<hash of the config>``: the same config is trained
once and loaded afterwards.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..data import load_dataset
from ..data.types import Dataset
from ..errors import ConfigError
from ..models.extractors import METADATA_KEY, build_encoder, load_extractor, set_standardiser
from ..options import config_from_dict, config_to_dict
from ..paths import extractor_dir
from ..seeding import derive_seed, seeded_rng, torch_generator
from ..storage import atomic_path
from ..training import TrainConfig, resolve_device, train
from .simclr import feature_dim, train_simclr

METHODS = ("simclr", "supervised")


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """How to pre-train an extractor. ``n_images`` takes a seeded subset of the training split
    (0 = all of it). ``lr`` is Adam's for SimCLR and SGD's for supervised pre-training."""

    dataset: str = "digits"
    method: str = "simclr"
    encoder: str = "conv"
    encoder_options: dict[str, Any] = field(default_factory=dict)
    n_images: int = 5000
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    temperature: float = 0.5
    projection_dim: int = 64
    flip: bool | None = None  # None: horizontal flips only for colour images
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"pretrain: method must be one of {METHODS}, got {self.method!r}")
        for key in ("n_images", "epochs"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"pretrain: {key} must be an integer >= 0, got {v!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            raise ConfigError(f"pretrain: batch_size must be an integer >= 2, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"pretrain: lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ConfigError(f"pretrain: temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.projection_dim, int) or self.projection_dim < 1:
            raise ConfigError(f"pretrain: projection_dim must be a positive integer, got {self.projection_dim!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"pretrain: seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.encoder_options, dict):
            raise ConfigError("pretrain: encoder_options must be a mapping")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PretrainConfig":
        return config_from_dict(cls, values, "pretrain config")

    def key(self) -> str:
        """Cache key: readable prefix + 12 hex digits of the sha256 of the canonical config."""
        canon = json.dumps(config_to_dict(self), sort_keys=True, default=list)
        digest = hashlib.sha256(canon.encode()).hexdigest()[:12]
        return f"{Path(self.dataset).stem}-{self.method}-{self.encoder}-{digest}"


def pretraining_images(cfg: PretrainConfig, data_dir: str | None = None) -> Dataset:
    """The (seeded) subset of the dataset's *training* split used for pre-training."""
    train_set = load_dataset(cfg.dataset, data_dir).train
    if cfg.n_images and cfg.n_images < len(train_set):
        idx = torch.randperm(len(train_set), generator=torch_generator(cfg.seed, "pretrain-subset"), device="cpu")[: cfg.n_images]
        train_set = train_set.subset(idx)
    return train_set


class _Supervised(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim(encoder), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def pretrain_encoder(cfg: PretrainConfig, data: Dataset, *, device: str = "auto",
                     progress: bool | str = False) -> tuple[nn.Module, dict[str, Any]]:
    """Train a fresh encoder on ``data`` (images (N, C, H, W) in [0, 1]); returns it and a report."""
    dev = resolve_device(device)
    t0 = time.perf_counter()
    with seeded_rng(derive_seed(cfg.seed, "extractor-init"), dev):
        encoder = build_encoder(cfg.encoder, data.input_shape, cfg.encoder_options)
        if cfg.method == "simclr":
            flip = cfg.flip if cfg.flip is not None else data.input_shape[0] == 3
            history = train_simclr(
                encoder, data.x, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                temperature=cfg.temperature, projection_dim=cfg.projection_dim,
                generator=torch_generator(cfg.seed, "simclr"), flip=flip, device=dev, progress=progress,
            )
            report: dict[str, Any] = {"loss_history": history}
        else:
            model = _Supervised(encoder, data.num_classes)
            recipe = TrainConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, momentum=0.9, device=device)
            train(model, data, recipe, torch_generator(cfg.seed, "pretrain-batches"), progress=progress)
            from ..training import accuracy

            report = {"train_accuracy": accuracy(model, data)}
    set_standardiser(encoder, data.x)  # features standardised on the pre-training images
    report["seconds"] = time.perf_counter() - t0
    return encoder.cpu().eval(), report


def save_extractor(path: str | Path, encoder: nn.Module, meta: dict[str, Any]) -> Path:
    """Atomically write encoder weights + ``meta`` (JSON in the safetensors metadata)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta, default=list)})
    return path


def get_extractor(cfg: PretrainConfig, *, data_dir: str | None = None, out: str | Path | None = None,
                  device: str = "auto", progress: bool | str = False, force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Path of the extractor for ``cfg`` (trained now unless cached) and its metadata.

    ``out`` defaults to ``<cache root>/extractors/<cfg.key()>.safetensors`` (:func:`poisonlab.paths.extractor_dir`);
    ``force`` retrains.
    """
    path = Path(out) if out else extractor_dir() / f"{cfg.key()}.safetensors"
    if path.is_file() and not force:
        _, meta = load_extractor(str(path))
        if meta.get("config") == json.loads(json.dumps(config_to_dict(cfg), default=list)):
            return path, {**meta, "cached": True}
    data = pretraining_images(cfg, data_dir)
    encoder, report = pretrain_encoder(cfg, data, device=device, progress=progress)
    meta = {
        "encoder": cfg.encoder, "encoder_options": cfg.encoder_options, "input_shape": list(data.input_shape),
        "feature_dim": feature_dim(encoder), "method": cfg.method, "dataset": cfg.dataset,
        "n_images": len(data), "key": cfg.key(), "config": config_to_dict(cfg), "report": report,
    }
    save_extractor(path, encoder, meta)
    return path, {**json.loads(json.dumps(meta, default=list)), "cached": False}
