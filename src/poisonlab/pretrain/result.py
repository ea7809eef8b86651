"""A pre-trained feature extractor as one checked call: what ``pl.pretrain`` and ``poisonlab
pretrain`` do. :func:`pretrain_extractor` checks every input before any work, then trains the
extractor of the config (or finds it in the cache) with :func:`.store.get_extractor`, and returns
a :class:`PretrainedExtractor`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..data.sources import check_dataset_name
from ..devices import resolve_device
from ..errors import ConfigError
from ..models.extractors import ENCODERS
from ..options import config_to_dict
from ..validation import check_bool
from .store import PretrainConfig, get_extractor

_WHAT = "pretrain"


@dataclass(frozen=True)
class PretrainedExtractor:
    """A pre-trained extractor's file and metadata (``pl.pretrain`` returns it).

    Attributes:
        path: the safetensors file (``<cache root>/extractors/<key>.safetensors`` unless ``out``).
        key: the cache key, for ``--model linear_probe:<key>`` / ``fine_tune:<key>``.
        cached: True when the file was there already and nothing was trained.
        metadata: the metadata stored in the file: ``encoder``, ``encoder_options``,
            ``input_shape``, ``feature_dim``, ``method``, ``dataset``, ``n_images``, ``key``,
            ``config`` and ``report`` (``seconds`` of the training, and the SimCLR
            ``loss_history`` or the supervised ``train_accuracy``).
    """

    path: Path
    key: str
    cached: bool
    metadata: dict[str, Any]

    @property
    def seconds(self) -> float:
        """How long the training took (when it was trained: now, or before it was cached)."""
        return float(self.metadata["report"]["seconds"])

    def to_dict(self) -> dict[str, Any]:
        """The record ``poisonlab pretrain --json`` prints: the metadata, ``cached`` and ``path``."""
        return {**self.metadata, "cached": self.cached, "path": str(self.path)}


def pretrain_extractor(
    config: PretrainConfig | Mapping[str, Any] | None = None,
    *,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    **options: Any,
) -> PretrainedExtractor:
    """The extractor of ``config`` (a :class:`~.store.PretrainConfig` or a mapping of its fields;
    ``options`` are fields that replace its values) trained now, or found in the cache; ``out``:
    write it there instead of the cache; ``force``: train even if the file is there. Every input is
    checked before any work."""
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, PretrainConfig):
        base = config_to_dict(config)
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise ConfigError(f"{_WHAT}: config must be a PretrainConfig, a mapping of its options or None, "
                          f"got {type(config).__name__}")
    cfg = PretrainConfig.from_dict({**base, **options})
    if not isinstance(cfg.dataset, str):
        raise ConfigError(f"{_WHAT}: dataset must be a registered name or a .npz path, got {cfg.dataset!r}")
    check_dataset_name(cfg.dataset, _WHAT)
    ENCODERS.get(cfg.encoder)  # an unknown encoder raises, naming the registered ones
    resolve_device(device)
    for name, path in (("data_dir", data_dir), ("out", out)):
        if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(path)):
            raise ConfigError(f"{_WHAT}: {name} must be a path or None, got {path!r}")
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"{_WHAT}: out {str(out)!r} is a directory; give the .safetensors file to write")
    check_bool(force, "force", _WHAT)
    check_bool(progress, "progress", _WHAT)

    path, meta = get_extractor(cfg, data_dir=None if data_dir is None else str(data_dir), out=out, device=device,
                               progress="pretrain" if progress else False, force=force)
    cached = bool(meta.pop("cached"))
    return PretrainedExtractor(Path(path), str(meta["key"]), cached, meta)
