"""File handling shared by the pretrained-weight loaders: where weights are looked for, sha256
checks (the one file hash, :func:`poisonlab.storage.file_sha256`), safetensors reading (no pickle)
and the one error message that says what to install.

Search order for a weight directory named ``<name>`` (e.g. ``taef2``):

1. an explicit ``directory`` argument;
2. ``$POISONLAB_MODELS/<name>`` (:func:`poisonlab.paths.models_dir`);
3. the copy shipped inside the package (``poisonlab/models/pretrained/weights/<name>``), where the
   licence allows shipping and the files are small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, TypeVar

import torch

from ...errors import DataError
from ...paths import models_dir
from ...storage import file_sha256

__all__ = ["PACKAGE_WEIGHTS", "WeightFile", "candidate_dirs", "file_sha256", "find_weight_dir", "load_strict",
           "read_safetensors", "verify"]

M = TypeVar("M", bound=torch.nn.Module)

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class WeightFile:
    """One weight file of a pretrained model: its name, sha256, size in bytes and where it came from."""

    name: str
    sha256: str
    size: int | None = None


def candidate_dirs(name: str, directory: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for ``name``'s files, in order (see the module docstring)."""
    if directory is not None:
        return [Path(directory).expanduser()]
    env = models_dir()
    return ([env / name] if env is not None else []) + [PACKAGE_WEIGHTS / name]


def find_weight_dir(name: str, files: tuple[WeightFile, ...], directory: str | os.PathLike | None = None,
                    hint: str = "") -> Path:
    """The first candidate directory that holds every file of ``files``; a :class:`DataError` naming
    every place searched (and ``hint``: where to get the files) when none does."""
    tried = candidate_dirs(name, directory)
    for d in tried:
        if all((d / f.name).is_file() for f in files):
            return d
    names = ", ".join(f.name for f in files)
    where = "; ".join(str(d) for d in tried)
    raise DataError(f"{name} weights not found: need {names} in one directory; looked in {where}. "
                    f"Put the files in $POISONLAB_MODELS/{name}/ (or pass the directory).{' ' + hint if hint else ''}")


def verify(path: Path, expected: WeightFile) -> None:
    """Raise :class:`DataError` unless ``path`` has the expected sha256."""
    got = file_sha256(path)
    if got != expected.sha256:
        raise DataError(f"{path}: sha256 {got} does not match the expected {expected.sha256} "
                        f"(corrupt, truncated or a different file); replace it with the original")


def read_safetensors(path: Path, expected: WeightFile | None = None, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Verify (when ``expected`` is given) and read a safetensors file, floating tensors cast to ``dtype``."""
    from safetensors.torch import load_file

    if expected is not None:
        verify(path, expected)
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise DataError(f"{path}: cannot read safetensors weights ({exc})") from None
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def load_strict(module: M, state: Mapping[str, torch.Tensor], source: Path | str) -> M:
    """``module.load_state_dict(state, strict=True)``; a mismatch becomes a :class:`DataError` naming the file."""
    try:
        module.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise DataError(f"{source}: weights do not fit {type(module).__name__}: {str(exc).splitlines()[0]} "
                        f"{' '.join(str(exc).split())[:400]}") from None
    return module
