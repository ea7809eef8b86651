"""The run spec: one frozen description of a run (data, victim and its whole recipe, attack and its
options, defense, fraction, seed, injection) built alike from YAML, the CLI, sweeps and result
records; every key mirrors a CLI flag; unknown keys and bad values are errors."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..data.splits import check_fraction
from ..devices import parse_device
from ..errors import ConfigError
from ..options import config_from_dict, config_to_dict
from ..training import TrainConfig
from ..validation import check_choice, check_int

#: the run config's keys that make the victim's training recipe: every :class:`TrainConfig` field
#: but ``device`` (the run's own key); None in a run config means the recipe's default
RECIPE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig) if f.name != "device")
#: keys of a result record's ``config`` that the run derives (``recipe`` is also read back: the
#: trained recipe, :meth:`RunSpec.from_dict`)
RECORD_KEYS = ("recipe", "recipe_description", "bounds")


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One pretrain → attack → test run.

    The recipe keys (``epochs``, ``lr``, ``batch_size``, ``optimizer``, ``momentum``,
    ``weight_decay``, ``nesterov``, ``schedule``, ``step_size``, ``gamma``: every field of the
    victim's :class:`~poisonlab.training.TrainConfig` but the device, :data:`RECIPE_KEYS`) override
    the recipe's defaults (the thesis' plain SGD: 100 epochs, lr 0.1, the dataset's batch size);
    they are checked together as a recipe when the config is built (:meth:`recipe`).
    ``*_options`` are validated by the chosen component.

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
        lr: Victim learning rate (the optimiser's step size), > 0, or None (default) for the
            recipe's default (0.1; Adam / AdamW usually want ~1e-3).
        batch_size: Victim mini-batch size in samples, a positive integer, or None (default) for
            the dataset's default batch size (1000 MNIST-like, 256 CIFAR-10).
        optimizer: Victim optimiser, "sgd", "adam" or "adamw", or None (default) for "sgd".
        momentum: SGD momentum in [0, 1), or None (default) for 0 (plain SGD); SGD only.
        weight_decay: L2 penalty coefficient >= 0 (decoupled weight decay for "adamw"), or None
            (default) for 0.
        nesterov: Nesterov momentum (SGD with momentum > 0), True or False, or None (default)
            for False.
        schedule: Learning-rate schedule, "cosine" (to 0 over ``epochs``) or "step" (x ``gamma``
            every ``step_size`` epochs), or None (default) for a constant learning rate.
        step_size: For schedule "step": its period in epochs, a positive integer, or None
            (default) for ``max(1, epochs // 3)``.
        gamma: For schedule "step": the factor applied every ``step_size`` epochs, in (0, 1], or
            None (default) for 0.1.
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
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    nesterov: bool | None = None
    schedule: str | None = None
    step_size: int | None = None
    gamma: float | None = None
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
        # the recipe keys, checked together (momentum with optimizer "adam" is an error); the device
        # only by its spelling above: a config may be built here for a GPU worker
        self.recipe(device="cpu")
        if self.defense is not None and (not isinstance(self.defense, str) or not self.defense):
            raise ConfigError(f"defense must be a non-empty string or null, got {self.defense!r}")
        for key in ("model_options", "attack_options", "defense_options"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(f"{key} must be a mapping, got {getattr(self, key)!r}")

    def recipe(self, default_batch_size: int | None = None, *, device: str | None = None) -> TrainConfig:
        """The victim's training recipe: the recipe keys that are set, the recipe's defaults for
        the others (``batch_size``: ``default_batch_size``, the dataset's), on ``device`` (default:
        the run's, which :class:`TrainConfig` checks against this machine)."""
        given = {k: v for k in RECIPE_KEYS if (v := getattr(self, k)) is not None}
        given.setdefault("batch_size", default_batch_size)
        try:
            return TrainConfig(**given, device=self.device if device is None else device)
        except ConfigError as exc:
            raise ConfigError(f"run config: victim recipe: {exc}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunSpec":
        """A run config from its keys (a YAML file, a sweep row), or from the ``config`` of a result
        record: its derived keys (:data:`RECORD_KEYS`) are accepted, and its ``recipe`` (the recipe
        the run trained with, a mapping of :class:`TrainConfig` fields, also as dotted
        ``recipe.<field>`` keys) fills the recipe keys the config leaves None; a recipe value that
        disagrees with a recipe key is an error."""
        values = dict(values)
        for key in ("recipe_description", "bounds"):
            values.pop(key, None)
        recipe = values.pop("recipe", None)
        recipe = dict(recipe) if isinstance(recipe, dict) else ({} if recipe is None else recipe)
        if not isinstance(recipe, dict):
            raise ConfigError(f"run config: recipe must be a mapping of training-recipe fields, got {recipe!r}")
        recipe.update({k.partition(".")[2]: values.pop(k) for k in list(values) if k.startswith("recipe.")})
        recipe.pop("device", None)  # the run's device key says where it runs
        unknown = sorted(set(recipe) - set(RECIPE_KEYS))
        if unknown:
            raise ConfigError(f"run config: recipe: unknown option(s) {unknown}; valid options: {sorted(RECIPE_KEYS)}")
        for key, value in recipe.items():
            if values.get(key) is None:
                values[key] = value
            elif values[key] != value:
                raise ConfigError(f"run config: {key} is {values[key]!r} but recipe.{key} is {value!r}; give one")
        return config_from_dict(cls, values, "run config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunSpec":
        return cls.from_dict(load_yaml_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def merged(self, **overrides: Any) -> "RunSpec":
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
