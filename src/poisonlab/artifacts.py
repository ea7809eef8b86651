"""Artifacts: atomic JSON, poisons as npz, model weights as safetensors (never pickle).

Every file goes through the one atomic writer, :mod:`poisonlab.storage` (``write_atomic`` is re-exported here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .data.types import PoisonSet
from .errors import DataError
from .storage import atomic_path, write_atomic

__all__ = ["json_default", "load_poisons", "load_state", "save_model", "save_poisons", "save_state", "write_atomic",
           "write_json"]


def write_json(path: str | Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n").encode())


def json_default(o: Any) -> Any:
    """JSON for numpy scalars, tensors, tuples/sets and paths (the one conversion rule)."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_poisons(path: str | Path, poisons: PoisonSet) -> None:
    """npz with ``x`` float32 (N,C,H,W) in [0,1], ``y`` int64, ``source_index`` int64 (-1 = none)."""
    import io

    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        x=poisons.x.detach().cpu().numpy().astype(np.float32),
        y=poisons.y.detach().cpu().numpy().astype(np.int64),
        source_index=poisons.source_index.detach().cpu().numpy().astype(np.int64),
    )
    write_atomic(path, buf.getvalue())


def load_poisons(path: str | Path) -> PoisonSet:
    path = Path(path)
    if path.is_dir():
        path = path / "poisons.npz"
    if not path.is_file():
        raise DataError(f"poison file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"x", "y", "source_index"} - set(z.files)
            if missing:
                raise DataError(f"{path}: not a poisonlab poison file (missing {sorted(missing)})")
            return PoisonSet(torch.from_numpy(z["x"].astype(np.float32)), torch.from_numpy(z["y"].astype(np.int64)),
                             torch.from_numpy(z["source_index"].astype(np.int64)))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read poisons ({exc})") from None


def save_model(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    save_state(path, model.state_dict(), metadata)


def save_state(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """A state dict as safetensors, written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata or {})


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model file {path} does not exist")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise DataError(f"{path}: cannot read safetensors weights ({exc})") from None
