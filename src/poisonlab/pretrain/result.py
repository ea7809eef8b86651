"""What ``pl.pretrain_extractor`` (``poisonlab pretrain``) returns: a pre-trained extractor's file,
cache key and metadata, found in the cache or trained by :func:`.store.get_extractor`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PretrainedExtractor:
    """A pre-trained extractor's file and metadata (``pl.pretrain_extractor`` returns it).

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

    @classmethod
    def from_lookup(cls, path: str | Path, metadata: dict[str, Any]) -> PretrainedExtractor:
        """From what :func:`.store.get_extractor` returns: the file and its metadata with ``cached``."""
        meta = dict(metadata)
        cached = bool(meta.pop("cached"))
        return cls(Path(path), str(meta["key"]), cached, meta)
