"""Datasets, splits, the budget rule and the dataset types."""

from .arrays import data_from_arrays, from_bundle, split_experiment
from .bounds import Bounds
from .sources import DATASETS, load_dataset, make_or
from .splits import check_fraction, poison_count, split_train_val
from .types import AttackData, DataBundle, Dataset, ExperimentData, PoisonArrays, PoisonedDataset, PoisonSet
from .validate import check_dataset, validate

__all__ = [
    "Bounds",
    "DATASETS",
    "ExperimentData",
    "PoisonArrays",
    "check_dataset",
    "data_from_arrays",
    "from_bundle",
    "split_experiment",
    "validate",
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
