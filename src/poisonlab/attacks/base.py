"""The attack interface: a final public ``poison`` that enforces the contract around ``_craft``.

Every attack, whatever it does inside, is called the same way::

    poisons = ATTACKS.get("label_flip")(mode="rule").poison(data, victim, fraction, generator=g)

and returns exactly ``poison_count(fraction, len(data.train))`` points with pixels in [0, 1] and
labels in range (unchanged from their source for clean-label attacks), without mutating the input.
An attack object holds only its configuration (a frozen dataclass, unknown keys rejected).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.splits import check_fraction, poison_count
from ..data.types import AttackData, Dataset, PoisonSet
from ..errors import ContractError
from ..options import config_from_dict, config_to_dict
from ..registry import Registry
from ..training.victim import Victim


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """Base of every attack's options; subclasses add validated fields."""


class Attack(ABC):
    """Base class. Subclasses set ``name``, ``Config`` and ``clean_label`` and implement ``_craft``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[AttackConfig]] = AttackConfig
    clean_label: ClassVar[bool] = False
    #: "label", "input" or "both": what the attack may change relative to its source points
    summary: ClassVar[str] = ""

    def __init__(self, config: AttackConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either a config object or keyword options, not both")
        self.config = config if config is not None else config_from_dict(self.Config, options, f"attack {self.name!r}")
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(self.config).__name__}")

    def options(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def poison(
        self,
        data: AttackData,
        victim: Victim,
        fraction: float,
        *,
        generator: torch.Generator,
        progress: bool = False,
    ) -> PoisonSet:
        """Craft ``poison_count(fraction, |D_tr|)`` poisoned points. Do not override: implement ``_craft``."""
        fraction = check_fraction(fraction)
        n = poison_count(fraction, len(data.train))
        before = (data.train.x.clone(), data.train.y.clone(), data.val.x.clone(), data.val.y.clone())
        if n == 0:
            shape = (0, *data.train.x.shape[1:])
            out = PoisonSet(torch.empty(shape), torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64))
        else:
            out = self._craft(data, victim, n, generator=generator, progress=progress)
        after = (data.train.x, data.train.y, data.val.x, data.val.y)
        if not all(torch.equal(a, b) for a, b in zip(before, after)):
            raise ContractError(f"attack {self.name!r} mutated its input data")
        return self._check(out, data, n)

    @abstractmethod
    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool) -> PoisonSet:
        """Return exactly ``n_poison`` poisoned points."""

    def _check(self, out: PoisonSet, data: AttackData, n: int) -> PoisonSet:
        name = self.name
        x = out.x.detach().to("cpu", torch.float32)
        y = out.y.detach().to("cpu", torch.int64)
        src = out.source_index.detach().to("cpu", torch.int64)
        if len(src) == 0:
            src = torch.full((len(x),), -1, dtype=torch.int64)
        if len(x) != n or len(y) != n or len(src) != n:
            raise ContractError(f"attack {name!r} returned {len(x)} inputs / {len(y)} labels, the budget is exactly {n}")
        if tuple(x.shape[1:]) != tuple(data.train.x.shape[1:]):
            raise ContractError(f"attack {name!r} returned inputs of shape {tuple(x.shape[1:])}, expected {tuple(data.train.x.shape[1:])}")
        if not torch.isfinite(x).all() or (n and (x.min() < 0.0 or x.max() > 1.0)):
            raise ContractError(f"attack {name!r} returned pixels outside [0, 1] (or non-finite)")
        if n and (y.min() < 0 or y.max() >= data.num_classes):
            raise ContractError(f"attack {name!r} returned labels outside 0..{data.num_classes - 1}")
        if n and (src.min() < -1 or src.max() >= len(data.train)):
            raise ContractError(f"attack {name!r} returned source indices outside D_tr")
        if self.clean_label:
            if (src < 0).any():
                raise ContractError(f"clean-label attack {name!r} must give every poison a source point")
            if not torch.equal(y, data.train.y[src]):
                raise ContractError(f"clean-label attack {name!r} changed labels")
        return PoisonSet(x, y, src, dict(out.info), dict(out.states))

    def assess(self, poisons: PoisonSet, retrained: nn.Module, test: Dataset) -> dict[str, Any]:
        """Attack-specific measurements of the retrained victim (default none); merged into attack_info."""
        return {}


ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(name: str):
    """Class decorator: register under ``name`` (== module name) and set ``cls.name``."""

    def deco(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        ATTACKS.add(name, cls)
        return cls

    return deco


def build_attack(name: str, options: dict[str, Any] | None = None) -> Attack:
    return ATTACKS.get(name)(**(options or {}))
