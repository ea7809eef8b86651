"""Your own data: numpy or torch arrays → :class:`ExperimentData` (D_tr, D_v, test), checked first.

The protocol's datasets by name (``digits``, ``mnist``, a ``.npz`` file) go through the same
:func:`split_experiment`, so a library call and the CLI split the same data identically.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..seeding import torch_generator
from .bounds import Bounds
from .splits import split_train_val
from .types import DataBundle, Dataset, ExperimentData
from .validate import check_dataset

#: without a test set, :func:`data_from_arrays` holds out this seeded fraction of the points as test set
TEST_FRACTION = 0.2
#: the victim's batch size for array data when its recipe leaves ``batch_size=None``
ARRAY_BATCH_SIZE = 128


def _numeric(x: Any, what: str) -> torch.Tensor:
    """``x`` (numpy, torch, nested lists) as a CPU tensor of a real numeric dtype, or a DataError naming ``what``."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a user error here
            raise DataError(f"{what}: cannot be read as an array ({exc}); give one rectangular numeric array") from None
        if arr.dtype == object:
            raise DataError(f"{what}: must be a numeric array, got ragged or object data (dtype object)")
        if arr.dtype.kind not in "biuf":
            kind = "strings" if arr.dtype.kind in "US" else "not numbers"
            raise DataError(f"{what}: must be a real numeric array, got dtype {arr.dtype} ({kind}); convert it to numbers first")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise DataError(f"{what}: must be a real numeric array, got dtype {t.dtype}")
    if t.numel() == 0 or (t.ndim and len(t) == 0):
        raise DataError(f"{what}: is empty (shape {tuple(t.shape)}); give at least one point per class")
    return t


def _inputs(x: Any, what: str) -> torch.Tensor:
    t = _numeric(x, what)
    if t.ndim < 2:
        raise DataError(f"{what}: must be (N, *input_shape) — e.g. (N, d) features or (N, C, H, W) images — "
                        f"got shape {tuple(t.shape)}")
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).flatten(1).any(1).sum())
        raise DataError(f"{what}: {bad} input(s) contain NaN or inf")
    return t.contiguous()


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _labels(y: Any, n: int, what: str) -> torch.Tensor:
    t = _numeric(y, what)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise DataError(f"{what}: labels must be a vector (N,) of class indices, got shape {tuple(t.shape)}")
    if len(t) != n:
        raise DataError(f"{what}: {len(t)} labels for {n} inputs")
    if t.is_floating_point() and (not torch.isfinite(t).all() or not torch.equal(t, t.round())):
        raise DataError(f"{what}: labels must be integers, got non-integer floats")
    t = t.to(torch.int64)
    if int(t.min()) < 0:
        raise DataError(f"{what}: labels must be class indices 0..C-1, got {int((t < 0).sum())} negative label(s) "
                        f"(smallest {int(t.min())}); map your classes to 0..C-1 first")
    return t


def split_experiment(train: Dataset, test: Dataset, *, seed: int = 0, val_fraction: float = 0.3,
                     name: str | None = None, default_batch_size: int = 1000) -> ExperimentData:
    """THE split of a clean training set into D_tr / D_v: a permutation seeded by (``seed``, "split"),
    D_v the last ``val_fraction`` of it (thesis §2.5.2: 70 / 30)."""
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    split = split_train_val(train, torch_generator(seed, "split"), 1.0 - float(val_fraction))
    if len(split.train) == 0 or len(split.val) == 0:
        raise DataError(f"{name or train.name or 'dataset'}: {len(train)} training points are too few to split into D_tr and D_v")
    return ExperimentData(split.train, split.val, test, name or train.name or "arrays", default_batch_size, int(seed))


def from_bundle(bundle: DataBundle, seed: int) -> ExperimentData:
    """A named dataset (:func:`poisonlab.data.load_dataset`) split as the protocol splits it."""
    return split_experiment(bundle.train, bundle.test, seed=seed, name=bundle.name, default_batch_size=bundle.default_batch_size)


def data_from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    bounds: Any = (0.0, 1.0),
    val_fraction: float = 0.3,
    seed: int = 0,
    num_classes: int | None = None,
    name: str = "arrays",
) -> ExperimentData:
    """Your arrays as protocol data: D_tr, D_v (the attacker's clean split) and a test set.

    Args:
        x_train: inputs (N, *input_shape), numpy or torch, any real dtype — (N, d) tabular features,
            (N, H, W) or (N, C, H, W) images; kept in that shape (your model sees what you give).
        y_train: labels (N,) of any integer dtype (or integral floats), class indices 0..C−1.
        x_test: test inputs; ``None``: a seeded ``TEST_FRACTION`` (20 %) of the given points is held
            out as test set (permutation seeded by (``seed``, "test")) before the split.
        y_test: test labels (with ``x_test``).
        bounds: the box every input, clean or poisoned, must lie in: a pair ``(lower, upper)`` of
            scalars or of arrays broadcastable to one input (per-feature bounds; ±inf allowed for an
            unbounded feature). Default the pixel box (0, 1). Attacks project their poisons onto it.
        val_fraction: the attacker's share D_v of the training points (default 0.3: the protocol's
            70 / 30 split), seeded by (``seed``, "split").
        seed: the seed of the split (and of the held-out test set).
        num_classes: number of classes C; default max label + 1.
        name: the data's name in records and logs.

    Raises:
        DataError: NaN / inf inputs, values outside ``bounds``, labels out of range or not integers,
            mismatched lengths or shapes — before any work.
    """
    xtr = _inputs(x_train, "x_train")
    ytr = _labels(y_train, len(xtr), "y_train")
    if (x_test is None) != (y_test is None):
        raise DataError("give both x_test and y_test, or neither")
    if x_test is not None:
        xte = _inputs(x_test, "x_test")
        yte = _labels(y_test, len(xte), "y_test")
        if xte.shape[1:] != xtr.shape[1:]:
            raise DataError(f"x_train and x_test input shapes differ: {tuple(xtr.shape[1:])} vs {tuple(xte.shape[1:])}")
    else:
        perm = torch.randperm(len(xtr), generator=torch_generator(seed, "test"))
        n_test = int(round(TEST_FRACTION * len(xtr)))
        xte, yte = xtr[perm[:n_test]], ytr[perm[:n_test]]
        xtr, ytr = xtr[perm[n_test:]], ytr[perm[n_test:]]
    if len(xtr) == 0 or len(xte) == 0:
        raise DataError(f"{'x_train' if len(xtr) == 0 else 'the held-out test set'}: no points left "
                        f"({len(ytr) + len(yte)} given); give more points or x_test / y_test")
    top = int(max(ytr.max().item(), yte.max().item())) + 1
    if num_classes is None:
        if top < 2:
            raise DataError(f"y_train: every label is {top - 1}, so the data has one class; poisoning a classifier "
                            "needs at least 2 (or pass num_classes=)")
        num_classes = top
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise DataError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    b = Bounds.of(bounds, tuple(xtr.shape[1:]))
    train = check_dataset(Dataset(xtr, ytr, num_classes, name, b), "x_train / y_train")
    test = check_dataset(Dataset(xte, yte, num_classes, name, b), "x_test / y_test")
    return split_experiment(train, test, seed=seed, val_fraction=val_fraction, name=name, default_batch_size=ARRAY_BATCH_SIZE)
