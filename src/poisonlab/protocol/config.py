"""The run configuration: every key mirrors a CLI flag; unknown keys and bad values are errors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..data.splits import check_fraction
from ..devices import parse_device
from ..errors import ConfigError
from ..options import config_from_dict, config_to_dict
from ..validation import check_choice, check_int, check_number


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One pretrain → attack → test run.

    ``epochs``/``lr``/``batch_size`` override the victim recipe (thesis defaults: 100 epochs,
    lr 0.1, the dataset's batch size). ``*_options`` are validated by the chosen component.

    Every key mirrors a flag of ``poisonlab run`` (``batch_size`` is ``--batch-size``, the
    ``*_options`` mappings are ``-M``/``-A``/``-D KEY=VALUE``); a YAML file passed with
    ``--config`` holds the same keys, and flags override it (:meth:`merged`).

    Attributes:
        dataset: Registered dataset name ("digits", "mnist", "fashion_mnist", "cifar10", "or"; see
            ``poisonlab list``) or a path to a user ``.npz`` file. Default "digits".
        model: Victim architecture: a registered name ("lr", "nn", "cnn", "resnet18") or
            ``linear_probe:<extractor>`` / ``fine_tune:<extractor>``. Default "lr".
        attack: Registered attack name (see ``poisonlab list``). Default "label_flip".
        fraction: Poison budget ε_d as a fraction of the clean training-set size |D_tr|, in
            [0, 1] (not a percentage); the attacker makes ``poison_count(fraction, |D_tr|)``
            points. Default 0.03 (3 %, the thesis' budget).
        seed: Run seed, an integer >= 0: the 70/30 train/validation split, the victim's
            initialisation and batch order, and the attack's and defense's random draws all derive
            from it. Default 0.
        epochs: Victim training epochs, an integer >= 0, or None (default) for the recipe's
            default (100).
        lr: Victim learning rate (SGD step size), > 0, or None (default) for the recipe's
            default (0.1).
        batch_size: Victim mini-batch size in samples, a positive integer, or None (default) for
            the dataset's default batch size (1000 MNIST-like, 256 CIFAR-10).
        data_dir: Directory the dataset files are read from and downloaded to, or None (default)
            for ``$POISONLAB_DATA``, else ``<cache root>/data`` (:func:`poisonlab.paths.data_dir`;
            ``~/.cache/poisonlab/data`` by default).
        out: Output directory of the run's artifacts, or None (default) for
            ``runs/<dataset>-<model>-<attack>-f<fraction>-s<seed>`` (:meth:`default_out`).
        device: Where to train: "auto" (default; CUDA when available, else CPU), "cpu",
            "cuda" / "cuda:N" or "mps". The name is checked when the config is built
            (:func:`~poisonlab.devices.parse_device`), and against the machine (CUDA present,
            N < the GPU count: :func:`~poisonlab.devices.resolve_device`) first thing in the run,
            before any data is loaded.
        model_options: Options of the victim architecture (e.g. ``{"hidden": [256]}`` for "nn"),
            validated by it when the victim is built. Default {} (the architecture's defaults).
        attack_options: Options of the attack (its ``Config`` fields; option groups as nested
            mappings or dotted keys), validated by it. Default {} (the attack's defaults).
        poisons: Path to a ``poisons.npz`` (or the directory of an earlier run holding one) whose
            poisons are re-used instead of running the attack, or None (default) to attack.
        defense: Registered defense name for a defend stage after the test stage (score
            D_tr ∪ D_p, filter, retrain; see :mod:`poisonlab.protocol.defend`), or None (default)
            for no defense.
        defense_options: Options of the defense (its ``Config`` fields, e.g.
            ``{"fraction": 0.05}``), validated by it. Default {} (the defense's defaults).
        cache_dir: Directory of the content-addressed artifact cache the clean-trained victim is
            re-used from and stored in, or None (default) for no cache.
        injection: How the poisons enter the test stage: "add" (default; D_tr ∪ D_p, the
            protocol) or "replace" (each poison takes its source point's place, the
            unlearnable-examples threat model; see
            :meth:`~poisonlab.data.types.PoisonedDataset.mix`).
    """

    dataset: str = "digits"
    model: str = "lr"
    attack: str = "label_flip"
    fraction: float = 0.03
    seed: int = 0
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    data_dir: str | None = None
    out: str | None = None
    device: str = "auto"
    model_options: dict[str, Any] = field(default_factory=dict)
    attack_options: dict[str, Any] = field(default_factory=dict)
    poisons: str | None = None  # re-use the poisons saved by an earlier run instead of attacking
    defense: str | None = None  # defend stage after the test stage (see poisonlab.protocol.defend)
    defense_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None  # content-addressed cache of clean-trained victims (None: no cache)
    #: how the poisons enter the test stage: "add" (D_tr ∪ D_p, the protocol) or "replace" (each
    #: poison takes its source point's place, the unlearnable-examples threat model)
    injection: str = "add"

    def __post_init__(self) -> None:
        for key in ("dataset", "model", "attack", "device"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"{key} must be a non-empty string, got {getattr(self, key)!r}")
        parse_device(self.device)  # the spelling here; the machine where the run starts (prepare)
        check_fraction(self.fraction)
        check_choice(self.injection, "injection", ("add", "replace"))
        check_int(self.seed, "seed", minimum=0)
        if self.epochs is not None:
            check_int(self.epochs, "epochs", minimum=0)
        if self.lr is not None:
            check_number(self.lr, "lr")
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size")
        if self.defense is not None and (not isinstance(self.defense, str) or not self.defense):
            raise ConfigError(f"defense must be a non-empty string or null, got {self.defense!r}")
        for key in ("model_options", "attack_options", "defense_options"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(f"{key} must be a mapping, got {getattr(self, key)!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        return config_from_dict(cls, values, "run config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(load_yaml_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def merged(self, **overrides: Any) -> "RunConfig":
        """A copy with the non-None ``overrides`` applied (flags over config file)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return replace(self, **given)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None

    def default_out(self) -> str:
        base, _, arg = self.model.partition(":")  # linear_probe:path/enc.safetensors -> linear_probe-enc
        model = f"{base}-{Path(arg).stem}" if arg else base
        defended = f"-{self.defense}" if self.defense else ""
        replaced = "-replace" if self.injection == "replace" else ""
        return f"runs/{Path(self.dataset).stem}-{model}-{self.attack}-f{self.fraction:g}{replaced}-s{self.seed}{defended}"


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    return values
