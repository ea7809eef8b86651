"""Datasets, splits, the budget rule and the dataset types."""

from .sources import DATASETS, load_dataset, make_or
from .splits import check_fraction, poison_count, split_train_val
from .types import AttackData, DataBundle, Dataset, PoisonedDataset, PoisonSet

__all__ = [
    "DATASETS",
    "AttackData",
    "DataBundle",
    "Dataset",
    "PoisonSet",
    "PoisonedDataset",
    "check_fraction",
    "load_dataset",
    "make_or",
    "poison_count",
    "split_train_val",
]
