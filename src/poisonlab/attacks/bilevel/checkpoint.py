"""Resumable checkpoints of the bilevel attacks: safetensors + a JSON fingerprint, never pickle."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ...autodiff import Params
from ...data.bounds import Bounds
from ...errors import ConfigError
from ...validation import check_int


@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Resumable checkpoints of a bilevel attack (option group ``checkpoint`` of tgda,
    back_gradient and min_max): the attack resumes from ``<dir>/checkpoint.safetensors`` when it is
    there, and refuses one made by another configuration or dataset. Where checkpoints go and how
    often has no effect on the poisons (a resumed run is byte-identical to an uninterrupted one).

    Attributes:
        dir: Directory of the checkpoint (created when missing); null: no checkpoints. Default null.
        every: Save after every ``every``-th finished epoch (an integer >= 1; the last epoch is
            always saved). Default 1.
    """

    dir: str | None = None
    every: int = 1

    def __post_init__(self) -> None:
        if self.dir is not None and not isinstance(self.dir, (str, os.PathLike)):
            raise ConfigError(f"checkpoint: dir must be a directory path or null, got {self.dir!r}")
        check_int(self.every, "every", "checkpoint")


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (config, sizes, a data digest) to refuse stale checkpoints."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def bounds_key(bounds: Bounds) -> tuple:
    """Fingerprint parts for the data's box: none for the pixel box [0, 1] (the fingerprints of
    before), else its JSON form — a checkpoint made for another box is refused."""
    return () if bounds.is_unit else (bounds.to_json(),)


class Checkpoint:
    """One file ``<dir>/checkpoint.safetensors`` (tensors + JSON metadata in its header), replaced
    atomically after every epoch, so an interrupted attack resumes from its last finished epoch.

    ``load`` returns ``None`` when there is no checkpoint and raises :class:`ConfigError` when the
    checkpoint belongs to another configuration (its fingerprint differs).
    """

    FILE = "checkpoint.safetensors"

    def __init__(self, directory: str | os.PathLike | None, fp: str, every: int = 1) -> None:
        self.dir = Path(directory) if directory else None
        self.fp = fp
        self.every = every

    @staticmethod
    def of(cfg: CheckpointConfig, fp: str) -> "Checkpoint":
        """The checkpoint the option group ``cfg`` asks for, for the configuration fingerprint ``fp``."""
        return Checkpoint(cfg.dir, fp, cfg.every)

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether to save after ``epochs_done`` of ``epochs`` epochs (every ``every``-th, and the last)."""
        return self.dir is not None and (epochs_done % self.every == 0 or epochs_done == epochs)

    def save(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{self.FILE}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"fingerprint": self.fp, "meta": json.dumps(meta)})
        os.replace(tmp, self.dir / self.FILE)

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        if self.dir is None or not (self.dir / self.FILE).is_file():
            return None
        path = str(self.dir / self.FILE)
        with safe_open(path, framework="pt") as fh:
            header = fh.metadata() or {}
        if header.get("fingerprint") != self.fp:
            raise ConfigError(f"checkpoint {path} belongs to another attack configuration or dataset; "
                              "delete it or choose another checkpoint directory")
        return load_file(path), json.loads(header.get("meta", "{}"))


def pack(prefix: str, tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{i}": t for i, t in enumerate(tensors)}


def unpack(prefix: str, state: dict[str, torch.Tensor], like: Sequence[torch.Tensor]) -> Params:
    return tuple(state[f"{prefix}.{i}"].to(t.device, t.dtype) for i, t in enumerate(like))


def optimizer_state(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors of an SGD/Adam state (``step``, ``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``)."""
    out: dict[str, torch.Tensor] = {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                out[f"opt.{i}.{k}"] = v
            elif v is not None:
                out[f"opt.{i}.{k}"] = torch.tensor(float(v))
    return out


def load_optimizer_state(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(params):
        prefix = f"opt.{i}."
        entries = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if entries:
            opt.state[p] = {k: v.to(p.device) if v.ndim else v.clone() for k, v in entries.items()}
