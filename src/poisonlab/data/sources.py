"""Datasets by name: ``digits`` (embedded default), ``or`` (2-D toy), ``mnist``, ``fashion_mnist``,
``cifar10`` (from a data directory) and any user ``.npz`` file with the four standard arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError, UnknownNameError
from ..paths import data_dir as data_root
from ..registry import Registry
from . import files
from .types import DataBundle, Dataset

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    load: Callable[[Path | None], DataBundle]
    needs_files: bool = False


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def to_tensor_images(x: np.ndarray, source: str) -> torch.Tensor:
    """uint8 (N,H,W) / (N,H,W,C) or float in [0,1] -> float32 (N,C,H,W) in [0,1]."""
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        pass  # already NCHW
    else:
        raise DataError(f"{source}: images must be (N,H,W), (N,H,W,C) or (N,C,H,W) with C in {{1,3}}, got {x.shape}")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (np.nanmin(x) < 0.0 or np.nanmax(x) > 1.0 or np.isnan(x).any()):
            raise DataError(f"{source}: float images must lie in [0, 1]")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    raise DataError(f"{source}: images must be uint8 (0-255) or float in [0, 1], got dtype {x.dtype}")


def to_tensor_labels(y: np.ndarray, n: int, source: str) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: labels must be a vector of length {n}, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: labels must be integers, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{source}: labels must be >= 0")
    return torch.from_numpy(y.astype(np.int64))


def bundle_from_arrays(name: str, arrays: dict[str, np.ndarray], source: str, batch_size: int) -> DataBundle:
    xtr = to_tensor_images(arrays["x_train"], f"{source} x_train")
    xte = to_tensor_images(arrays["x_test"], f"{source} x_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{source}: x_train and x_test image shapes differ: {tuple(xtr.shape[1:])} vs {tuple(xte.shape[1:])}")
    ytr = to_tensor_labels(arrays["y_train"], len(xtr), f"{source} y_train")
    yte = to_tensor_labels(arrays["y_test"], len(xte), f"{source} y_test")
    num_classes = int(max(ytr.max().item() if len(ytr) else 0, yte.max().item() if len(yte) else 0)) + 1
    if num_classes < 2:
        raise DataError(f"{source}: needs at least two classes")
    return DataBundle(name, Dataset(xtr, ytr, num_classes, name), Dataset(xte, yte, num_classes, name), batch_size)


# ---------------------------------------------------------------------------- embedded
def load_digits_bundle(_: Path | None = None) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (1797 images, 0-16 grey levels scaled to [0, 1]).

    The test set is a fixed held-out 20 % (a permutation seeded with 0, independent of the run
    seed), so every run of every attack is scored on the same 360 images.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    y = torch.from_numpy(d.target.astype(np.int64))
    g = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    perm = torch.randperm(len(x), generator=g)
    n_test = int(round(DIGITS_TEST_FRACTION * len(x)))
    test, train = perm[:n_test], perm[n_test:]
    return DataBundle("digits", Dataset(x[train], y[train], 10, "digits"), Dataset(x[test], y[test], 10, "digits"), 64)


OR_REPEATS = 50
OR_NOISE = 0.05


def make_or(repeats: int = OR_REPEATS, noise: float = OR_NOISE, seed: int = 0) -> Dataset:
    """The OR toy set: (0,0)->0, (0,1)->1, (1,0)->1, (1,1)->1, each repeated ``repeats`` times
    with N(0, noise²) jitter, clipped to [0, 1]. Shape (4·repeats, 1, 1, 2)."""
    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    g = torch.Generator().manual_seed(seed)
    x = corners.repeat(repeats, 1) + noise * torch.randn(4 * repeats, 2, generator=g)
    return Dataset(x.clamp(0.0, 1.0).view(-1, 1, 1, 2), labels.repeat(repeats), 2, "or")


def load_or_bundle(_: Path | None = None) -> DataBundle:
    return DataBundle("or", make_or(seed=0), make_or(seed=1), 32)


# ---------------------------------------------------------------------------- files
def _file_loader(name: str, batch_size: int) -> Callable[[Path | None], DataBundle]:
    def load(data_dir: Path | None) -> DataBundle:
        root = data_root(data_dir)
        arrays = files.load_arrays(files.FILE_DATASETS[name], root)
        return bundle_from_arrays(name, arrays, str(root), batch_size)

    return load


DATASETS.add("digits", DatasetEntry("digits", "scikit-learn 8x8 digits, embedded (no files, no network)", load_digits_bundle))
DATASETS.add("or", DatasetEntry("or", "2-D OR toy set, 4 points x 50 noisy copies (reachability chapter)", load_or_bundle))
DATASETS.add("mnist", DatasetEntry("mnist", "MNIST 28x28 grey, 60k/10k", _file_loader("mnist", 1000), True))
DATASETS.add(
    "fashion_mnist", DatasetEntry("fashion_mnist", "Fashion-MNIST 28x28 grey, 60k/10k", _file_loader("fashion_mnist", 1000), True)
)
DATASETS.add("cifar10", DatasetEntry("cifar10", "CIFAR-10 32x32 RGB, 50k/10k", _file_loader("cifar10", 256), True))


def load_npz_bundle(path: Path) -> DataBundle:
    arrays = files.read_npz(path)
    n = len(arrays["x_train"])
    return bundle_from_arrays(path.stem, arrays, str(path), 1000 if n >= 10000 else 64)


def check_dataset_name(name: str, what: str = "") -> None:
    """``name`` names a dataset :func:`load_dataset` can load, checked without loading it: a
    registered name, or a path ending in ``.npz`` to an existing file. Raises
    :class:`~poisonlab.errors.UnknownNameError` / :class:`~poisonlab.errors.DataError` (prefixed
    with ``what``, e.g. the option that gave the name) otherwise."""
    prefix = f"{what}: " if what else ""
    if name.endswith(".npz"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise DataError(f"{prefix}dataset file {path} does not exist")
    elif name not in DATASETS:
        raise UnknownNameError(
            f"{prefix}unknown dataset {name!r}; give a registered dataset ({', '.join(DATASETS.names())}) "
            "or a path to a .npz file"
        )


def load_dataset(name: str, data_dir: str | Path | None = None) -> DataBundle:
    """Load a dataset by registered name, or a user npz by path (anything ending in ``.npz``)."""
    check_dataset_name(name)
    if name.endswith(".npz"):
        return load_npz_bundle(Path(name).expanduser())
    return DATASETS.get(name).load(Path(data_dir) if data_dir else None)
