"""Dataset types. Inputs are float tensors (N, *input_shape) inside the dataset's :class:`Bounds`
(images: (N, C, H, W) in [0, 1]); labels are int64 (N,)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .bounds import Bounds


@dataclass(frozen=True)
class Dataset:
    """A labelled set. ``x``: float (N, *input_shape) — (N, d) tabular, (N, C, H, W) images, any
    shape — inside ``bounds``; ``y``: int64 (N,) in 0..num_classes−1.

    ``bounds`` is the box every input lives in (default the pixel box [0, 1]); it is carried along by
    :meth:`subset` and :meth:`to`, and every attack's projection reads it. The constructor checks
    shapes and dtypes only; :func:`poisonlab.data.validate.check_dataset` checks the values.

    Attributes:
        x: The inputs, a floating-point tensor (N, *input_shape) inside ``bounds``, in the data's
            own units (pixel intensities in [0, 1] for the built-in image sets). Required.
        y: The labels, an int64 tensor (N,) with values in 0..num_classes−1. Required.
        num_classes: Number of classes C (labels range over 0..C−1; a class may have no point
            here). Required.
        name: A label for messages and records (e.g. "mnist"). Default "" (messages then say
            "dataset").
        bounds: The :class:`~poisonlab.data.bounds.Bounds` box every input (clean or poisoned)
            lies in, per feature, in the units of ``x``. Default ``Bounds.unit()``, the pixel box
            [0, 1].
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str = ""
    bounds: Bounds = field(default_factory=Bounds.unit)

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise DataError(f"{self.name or 'dataset'}: x must be (N, *input_shape), got shape {tuple(self.x.shape)}")
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise DataError(
                f"{self.name or 'dataset'}: y must be (N,) with N = {self.x.shape[0]}, got {tuple(self.y.shape)}"
            )
        if self.y.dtype != torch.int64:
            raise DataError(f"{self.name or 'dataset'}: labels must be int64, got {self.y.dtype}")
        if not self.x.is_floating_point():
            raise DataError(f"{self.name or 'dataset'}: inputs must be floating point, got {self.x.dtype}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        """True for (N, C, H, W) inputs with C in {1, 3} (what image-only components need)."""
        return self.x.ndim == 4 and self.x.shape[1] in (1, 3)

    def subset(self, index: torch.Tensor) -> "Dataset":
        return Dataset(self.x[index], self.y[index], self.num_classes, self.name, self.bounds)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Dataset":
        return Dataset(self.x.to(device, dtype) if dtype is not None else self.x.to(device), self.y.to(device),
                       self.num_classes, self.name, self.bounds)



@dataclass(frozen=True)
class DataBundle:
    """A dataset as the protocol uses it: the clean training set and the test set."""

    name: str
    train: Dataset
    test: Dataset
    default_batch_size: int = 1000


class SplitView:
    """Base of the views of a dataset's splits (:class:`AttackData`, :class:`ExperimentData`): their
    classes and their box are those of ``train`` (D_tr)."""

    train: Dataset

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def bounds(self) -> Bounds:
        """The box every input, clean or poisoned, must lie in (D_tr's)."""
        return self.train.bounds


@dataclass(frozen=True)
class AttackData(SplitView):
    """The attacker's view: D_tr (victim training set), D_v (attacker validation set) and how the
    test stage will use the poisons (``injection``: "add" beside D_tr, or "replace" their sources;
    see :meth:`PoisonedDataset.mix`).

    Attributes:
        train: D_tr, the clean training set the victim is trained on (and that poisons are added
            to, or substituted into). Required.
        val: D_v, the attacker's clean validation split (the attacker's objective is measured on
            it; the test set is never shown to the attacker). Required.
        injection: How the test stage will use the poisons: "add" (default; D_tr ∪ D_p) or
            "replace" (each poison in place of its source point of D_tr).
    """

    train: Dataset
    val: Dataset
    injection: str = "add"


@dataclass(frozen=True)
class PoisonSet:
    """Poisoned points returned by an attack.

    ``source_index[i]`` is the index in D_tr of the clean point poison ``i`` was made from,
    or -1 when it has no source.

    Attributes:
        x: The poison inputs, a float tensor (n, *input_shape) inside the data's bounds (the same
            units as D_tr's inputs). Required.
        y: The poison labels, an integer tensor (n,) in 0..num_classes−1. Required.
        source_index: int64 (n,): for each poison the index in D_tr of the clean point it was
            made from, −1 where it has none. Default an empty tensor (0,), read as "no poison has
            a source" (see :attr:`source`).
        info: The attack's diagnostics (JSON-serialisable; e.g. losses or iteration counts),
            saved in the run's record. Default {}.
        states: Model weights the attack produced, name -> ``state_dict`` (the runner saves each
            as ``<name>.safetensors``). Default {}.
    """

    x: torch.Tensor
    y: torch.Tensor
    source_index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64, device="cpu"))
    info: dict = field(default_factory=dict)  # attack-specific diagnostics (JSON-serialisable)
    #: model weights the attack produced, name -> state dict (the runner saves <name>.safetensors)
    states: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def source(self) -> torch.Tensor:
        """(n,) int64: the D_tr index each poison was made from, −1 where it has none."""
        if len(self.source_index) == len(self):
            return self.source_index
        return torch.full((len(self),), -1, dtype=torch.int64, device=self.x.device)

    def numpy(self) -> "PoisonArrays":
        """The poisons as numpy arrays ``(x, y, source)`` (a named tuple)."""
        return PoisonArrays(self.x.detach().cpu().numpy(), self.y.detach().cpu().numpy(),
                            self.source.detach().cpu().numpy())


class PoisonArrays(NamedTuple):
    """:meth:`PoisonSet.numpy`: poison inputs ``x`` (n, *input_shape), labels ``y`` (n,) and
    ``source`` (n,), the D_tr index of each poison's clean point (−1: none)."""

    x: np.ndarray
    y: np.ndarray
    source: np.ndarray


@dataclass(frozen=True)
class PoisonedDataset:
    """D_tr ∪ D_p with a mask that says which points are poison (so defenses can be scored)."""

    dataset: Dataset
    is_poison: torch.Tensor  # bool (N,)

    @staticmethod
    def combine(clean: Dataset, poisons: PoisonSet) -> "PoisonedDataset":
        x = torch.cat([clean.x, poisons.x.to(clean.x.device, clean.x.dtype)], 0)
        y = torch.cat([clean.y, poisons.y.to(clean.y.device, torch.int64)], 0)
        mask = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # on the data's device, like the data
        mask[len(clean):] = True
        return PoisonedDataset(Dataset(x, y, clean.num_classes, clean.name, clean.bounds), mask)

    @staticmethod
    def substitute(clean: Dataset, poisons: PoisonSet) -> "PoisonedDataset":
        """D_tr with each poison *in place of* its source point (``source_index``): the threat model of
        unlearnable examples, where the data owner perturbs the data before release. Every poison
        needs a distinct source in D_tr; the result has |D_tr| points."""
        src = poisons.source_index.to(torch.int64)
        if len(src) != len(poisons) or (len(src) and (int(src.min()) < 0 or int(src.max()) >= len(clean))):
            raise ConfigError("injection 'replace' needs every poison to name its source point in D_tr "
                              "(source_index); this attack makes points without a source")
        if len(torch.unique(src)) != len(src):
            raise ConfigError("injection 'replace' needs distinct source points; this attack reuses sources")
        x, y = clean.x.clone(), clean.y.clone()
        x[src] = poisons.x.to(clean.x.device, clean.x.dtype)
        y[src] = poisons.y.to(clean.y.device, torch.int64)
        mask = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        mask[src] = True
        return PoisonedDataset(Dataset(x, y, clean.num_classes, clean.name, clean.bounds), mask)

    @staticmethod
    def mix(clean: Dataset, poisons: PoisonSet, injection: str = "add") -> "PoisonedDataset":
        """THE rule for the training set of the test stage: ``"add"`` D_tr ∪ D_p (the protocol's
        default), ``"replace"`` D_tr with the poisons substituted for their sources."""
        if injection == "add":
            return PoisonedDataset.combine(clean, poisons)
        if injection == "replace":
            return PoisonedDataset.substitute(clean, poisons)
        raise ConfigError(f"injection must be 'add' or 'replace', got {injection!r}")

    def __len__(self) -> int:
        return len(self.dataset)


@dataclass(frozen=True)
class ExperimentData(SplitView):
    """Data ready for the protocol: D_tr (the victim's training set), D_v (the attacker's clean
    validation split) and the test set, all with the same bounds and classes.

    Build it from arrays with :func:`poisonlab.data_from_arrays` (or from a dataset name inside the
    protocol); both use the same seeded split rule (:func:`poisonlab.data.splits.split_train_val`).
    ``default_batch_size`` is the victim's batch size when its recipe leaves ``batch_size=None``.

    Attributes:
        train: D_tr, the victim's clean training set. Required.
        val: D_v, the attacker's clean validation split (also the trusted reference set of the
            defenses that need one). Required.
        test: The held-out test set the victim's accuracy is measured on. Required.
        name: A label for messages, records and output paths. Default "arrays".
        default_batch_size: The victim's mini-batch size in samples when its recipe leaves
            ``batch_size=None``. Default 1000.
        split_seed: The seed of the train/validation split that produced ``train`` and ``val``
            (part of the clean victim's cache key; setting it does not re-split). Default 0.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    name: str = "arrays"
    default_batch_size: int = 1000
    split_seed: int = 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.input_shape

    def attack_data(self, injection: str = "add") -> AttackData:
        """The attacker's view (D_tr, D_v)."""
        return AttackData(train=self.train, val=self.val, injection=injection)

    def __repr__(self) -> str:
        return (f"ExperimentData({self.name!r}: |D_tr|={len(self.train)}, |D_v|={len(self.val)}, |test|={len(self.test)}, "
                f"input {self.input_shape}, {self.num_classes} classes, bounds {self.bounds.describe()})")
