"""poisonlab: a toolkit for studying what untrusted training data does to ML models.

The public API (see :mod:`poisonlab.api`)::

    import poisonlab as pl
    data = pl.data_from_arrays(x_train, y_train, x_test, y_test, bounds=(0.0, 1.0))
    victim = pl.victim(make_model, optimizer="adam", lr=1e-3, epochs=50)  # make_model: () -> nn.Module
    result = pl.run(data, victim, "label_flip", fraction=0.03)    # a pl.RunResult
    result.clean_accuracy, result.poisoned_accuracy, result.accuracy_drop

``import poisonlab`` is fast and sets nothing: the API's modules (and torch) load on first use.

Layers (imports point downward only)::

    data -> models -> training -> autodiff -> attacks / defenses / theory
         -> protocol -> sweeps -> reporting -> api -> evaluation / interop -> cli
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> the module that defines it (loaded on first access, PEP 562)
_PUBLIC = {
    "data_from_arrays": "poisonlab.api",
    "victim": "poisonlab.api",
    "poison": "poisonlab.api",
    "run": "poisonlab.api",
    "run_spec": "poisonlab.api",
    "make_target": "poisonlab.api",
    "transfer": "poisonlab.api",
    "threshold_spec": "poisonlab.api",
    "sweep": "poisonlab.api",
    "disguise": "poisonlab.api",
    "train_vae": "poisonlab.api",
    "pretrain_extractor": "poisonlab.api",
    "CraftedDisguise": "poisonlab.generative.disguise_files",
    "TrainedVAE": "poisonlab.generative.vae_quality",
    "PretrainConfig": "poisonlab.pretrain.store",
    "PretrainedExtractor": "poisonlab.pretrain.result",
    "RunSpec": "poisonlab.protocol.config",
    "defend": "poisonlab.api",
    "threshold": "poisonlab.api",
    "validate": "poisonlab.api",
    "RunResult": "poisonlab.protocol.results",
    "DefenseResult": "poisonlab.protocol.results",
    "ThresholdResult": "poisonlab.protocol.results",
    "evaluate": "poisonlab.evaluation",
    "Evaluation": "poisonlab.evaluation",
    "register_attack": "poisonlab.attacks.base",
    "register_defense": "poisonlab.defenses.base",
    "register_victim": "poisonlab.models.victims",
    "register_target": "poisonlab.attacks.targets",
    "Component": "poisonlab.component",
    "Attack": "poisonlab.attacks.base",
    "AttackConfig": "poisonlab.attacks.base",
    "Defense": "poisonlab.defenses.base",
    "DefenseConfig": "poisonlab.defenses.base",
    "Architecture": "poisonlab.models.victims",
    "ArchitectureConfig": "poisonlab.models.victims",
    "TargetMaker": "poisonlab.attacks.targets",
    "TargetConfig": "poisonlab.attacks.targets",
    "TargetContext": "poisonlab.attacks.targets",
    "Victim": "poisonlab.training.victim",
    "AttackData": "poisonlab.data.types",
    "Dataset": "poisonlab.data.types",
    "PluginError": "poisonlab.errors",
    "ArtifactCache": "poisonlab.cache",
    "Bounds": "poisonlab.data.bounds",
    "ExperimentData": "poisonlab.data.types",
    "PoisonSet": "poisonlab.data.types",
    "VictimSpec": "poisonlab.training.victim",
    "TrainConfig": "poisonlab.training.loop",
    "PoisonlabError": "poisonlab.errors",
    "ConfigError": "poisonlab.errors",
    "DataError": "poisonlab.errors",
    "UnsupportedError": "poisonlab.errors",
    "ContractError": "poisonlab.errors",
    "DivergenceError": "poisonlab.errors",
}

__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only ("import x as x": an explicit re-export)
    from .api import data_from_arrays as data_from_arrays
    from .api import defend as defend
    from .api import disguise as disguise
    from .api import make_target as make_target
    from .api import poison as poison
    from .api import pretrain_extractor as pretrain_extractor
    from .api import run as run
    from .api import run_spec as run_spec
    from .api import sweep as sweep
    from .api import threshold as threshold
    from .api import threshold_spec as threshold_spec
    from .api import train_vae as train_vae
    from .api import transfer as transfer
    from .api import validate as validate
    from .api import victim as victim
    from .attacks.base import Attack as Attack
    from .attacks.base import AttackConfig as AttackConfig
    from .attacks.base import register_attack as register_attack
    from .attacks.targets import TargetConfig as TargetConfig
    from .attacks.targets import TargetContext as TargetContext
    from .attacks.targets import TargetMaker as TargetMaker
    from .attacks.targets import register_target as register_target
    from .cache import ArtifactCache as ArtifactCache
    from .component import Component as Component
    from .data.bounds import Bounds as Bounds
    from .data.types import AttackData as AttackData
    from .data.types import Dataset as Dataset
    from .data.types import ExperimentData as ExperimentData
    from .data.types import PoisonSet as PoisonSet
    from .defenses.base import Defense as Defense
    from .defenses.base import DefenseConfig as DefenseConfig
    from .defenses.base import register_defense as register_defense
    from .errors import ConfigError as ConfigError
    from .errors import ContractError as ContractError
    from .errors import DataError as DataError
    from .errors import DivergenceError as DivergenceError
    from .errors import PluginError as PluginError
    from .errors import PoisonlabError as PoisonlabError
    from .errors import UnsupportedError as UnsupportedError
    from .evaluation import Evaluation as Evaluation
    from .evaluation import evaluate as evaluate
    from .generative.disguise_files import CraftedDisguise as CraftedDisguise
    from .generative.vae_quality import TrainedVAE as TrainedVAE
    from .models.victims import Architecture as Architecture
    from .models.victims import ArchitectureConfig as ArchitectureConfig
    from .models.victims import register_victim as register_victim
    from .pretrain.result import PretrainedExtractor as PretrainedExtractor
    from .pretrain.store import PretrainConfig as PretrainConfig
    from .protocol.config import RunSpec as RunSpec
    from .protocol.results import DefenseResult as DefenseResult
    from .protocol.results import RunResult as RunResult
    from .protocol.results import ThresholdResult as ThresholdResult
    from .training.loop import TrainConfig as TrainConfig
    from .training.victim import Victim as Victim
    from .training.victim import VictimSpec as VictimSpec


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'poisonlab' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
