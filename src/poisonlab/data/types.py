"""Dataset types. Data is float tensors in [0, 1] of shape (N, C, H, W); labels are int64 (N,)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, DataError


@dataclass(frozen=True)
class Dataset:
    """A labelled image set. ``x``: float32 (N, C, H, W) in [0, 1]; ``y``: int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"{self.name or 'dataset'}: x must be (N, C, H, W), got shape {tuple(self.x.shape)}")
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
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor) -> "Dataset":
        return Dataset(self.x[index], self.y[index], self.num_classes, self.name)

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.x.to(device), self.y.to(device), self.num_classes, self.name)


@dataclass(frozen=True)
class DataBundle:
    """A dataset as the protocol uses it: the clean training set and the test set."""

    name: str
    train: Dataset
    test: Dataset
    default_batch_size: int = 1000


@dataclass(frozen=True)
class AttackData:
    """The attacker's view: D_tr (victim training set), D_v (attacker validation set) and how the
    test stage will use the poisons (``injection``: "add" beside D_tr, or "replace" their sources;
    see :meth:`PoisonedDataset.mix`)."""

    train: Dataset
    val: Dataset
    injection: str = "add"

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


@dataclass(frozen=True)
class PoisonSet:
    """Poisoned points returned by an attack.

    ``source_index[i]`` is the index in D_tr of the clean point poison ``i`` was made from,
    or -1 when it has no source.
    """

    x: torch.Tensor
    y: torch.Tensor
    source_index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    info: dict = field(default_factory=dict)  # attack-specific diagnostics (JSON-serialisable)
    #: model weights the attack produced, name -> state dict (the runner saves <name>.safetensors)
    states: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class PoisonedDataset:
    """D_tr ∪ D_p with a mask that says which points are poison (so defenses can be scored)."""

    dataset: Dataset
    is_poison: torch.Tensor  # bool (N,)

    @staticmethod
    def combine(clean: Dataset, poisons: PoisonSet) -> "PoisonedDataset":
        x = torch.cat([clean.x, poisons.x.to(clean.x.dtype)], 0)
        y = torch.cat([clean.y, poisons.y.to(torch.int64)], 0)
        mask = torch.zeros(len(x), dtype=torch.bool)
        mask[len(clean):] = True
        return PoisonedDataset(Dataset(x, y, clean.num_classes, clean.name), mask)

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
        x[src] = poisons.x.to(clean.x.dtype)
        y[src] = poisons.y.to(torch.int64)
        mask = torch.zeros(len(x), dtype=torch.bool)
        mask[src] = True
        return PoisonedDataset(Dataset(x, y, clean.num_classes, clean.name), mask)

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
