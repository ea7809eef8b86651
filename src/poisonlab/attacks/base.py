"""The attack interface: a final public ``poison`` that enforces the contract around ``_craft``.

Every attack, whatever it does inside, is called the same way::

    poisons = ATTACKS.get("label_flip")(mode="rule").poison(data, victim, fraction, generator=g)

and returns exactly ``poison_count(fraction, len(data.train))`` points inside the data's bounds
(``data.bounds``: [0, 1] for images, per-feature boxes for tabular data) with labels in range
(unchanged from their source for clean-label attacks), without mutating the input. An attack object
holds only its configuration (a frozen dataclass, unknown keys rejected). Before any work,
:meth:`Attack.check_supported` raises :class:`~poisonlab.errors.UnsupportedError` when the attack's
mathematics or architecture does not fit the victim or the data. An expensive intermediate (a
pretrained generator, a target model) goes through the ``cache`` passed to ``poison`` — never a
global one.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from typing import Any, Callable, ClassVar, Mapping, TypeVar, final

import torch
from torch import nn

from ..cache import ArtifactCache, as_cache
from ..component import Component, component_registry
from ..data.splits import check_fraction, poison_count
from ..data.types import AttackData, Dataset, PoisonSet
from ..data.validate import validate
from ..errors import ContractError
from ..registry import Registry
from ..training.victim import Victim


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """Base of every attack's options; subclasses add validated fields (option groups and presets:
    :mod:`poisonlab.options`)."""


#: an attack's config type: ``class GC(Attack[GCConfig])`` makes ``self.config`` a ``GCConfig``
C = TypeVar("C", bound=AttackConfig)
T = TypeVar("T", bound=type)


class Attack(Component[C]):
    """Base class (a :class:`~poisonlab.component.Component`). Subclasses subclass ``Attack[XConfig]``,
    are registered with :func:`register_attack` (which sets ``name``), set ``clean_label`` and
    ``summary``, and implement ``_craft``. The type parameter is the one declaration of the config
    class: it types ``self.config`` for mypy and, read at class creation
    (:func:`~poisonlab.options.config_class`), sets ``Config``, the class the registry builds from
    (a subclass without a parameter inherits its parent's; ``class X(Attack)`` is a TypeError)."""

    kind: ClassVar[str] = "attack"
    config_base: ClassVar[type] = AttackConfig
    #: the config class, derived from the type parameter (never set in a class body)
    Config: ClassVar[type[AttackConfig]]
    clean_label: ClassVar[bool] = False
    #: "label", "input" or "both": what the attack may change relative to its source points
    summary: ClassVar[str] = ""

    def check_supported(self, data: AttackData, victim: Victim) -> None:  # noqa: B027 - an optional hook, not abstract
        """Raise :class:`~poisonlab.errors.UnsupportedError` (saying why) when this attack cannot run
        on ``victim`` / ``data``; called by :meth:`poison` before any work. Default: supported."""

    @final
    def poison(
        self,
        data: AttackData,
        victim: Victim,
        fraction: float,
        *,
        generator: torch.Generator,
        progress: bool = False,
        cache: ArtifactCache | str | None = None,
    ) -> PoisonSet:
        """Craft ``poison_count(fraction, |D_tr|)`` poisoned points. Do not override: implement ``_craft``.

        Args:
            data: the attacker's view, D_tr and D_v (their ``bounds`` are the admissible inputs).
            victim: the victim's spec, seed and clean-trained weights.
            fraction: poison fraction ε_d of |D_tr|, in [0, 1].
            generator: the attack stage's random generator (seeded by the protocol).
            progress: show progress bars for long work.
            cache: an :class:`~poisonlab.cache.ArtifactCache` (or its directory) for expensive
                intermediates (pretrained generators, target models); ``None``: build them.
        """
        fraction = check_fraction(fraction)
        n = poison_count(fraction, len(data.train))
        self.check_supported(data, victim)
        before = (data.train.x.clone(), data.train.y.clone(), data.val.x.clone(), data.val.y.clone())
        if n == 0:
            shape = (0, *data.train.x.shape[1:])
            out = PoisonSet(torch.empty(shape, device="cpu"), torch.empty(0, dtype=torch.int64, device="cpu"),
                            torch.empty(0, dtype=torch.int64, device="cpu"))
        else:
            out = self._craft(data, victim, n, generator=generator, progress=progress, cache=as_cache(cache))
        after = (data.train.x, data.train.y, data.val.x, data.val.y)
        if not all(torch.equal(a, b) for a, b in zip(before, after)):
            raise ContractError(f"attack {self.name!r} mutated its input data")
        return self._check(out, data, n)

    @abstractmethod
    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool,
               cache: ArtifactCache | None) -> PoisonSet:
        """Return exactly ``n_poison`` poisoned points."""

    def validate(self, poisons: PoisonSet, data: AttackData) -> PoisonSet:
        """Check ``poisons`` (e.g. loaded from disk) against this attack's contract on ``data``:
        the budget of ``len(poisons)``, shapes, bounds, labels, sources; returns them on the CPU."""
        return self._check(poisons, data, len(poisons))

    def keeps_labels(self) -> bool:
        """Whether this attack, with its options, keeps every poison's source label (checked on
        what it returns); default: the class's ``clean_label``."""
        return self.clean_label

    def _check(self, out: PoisonSet, data: AttackData, n: int) -> PoisonSet:
        return validate(out, data, n=n, clean_label=self.keeps_labels(), who=f"attack {self.name!r}")

    def assess(self, poisons: PoisonSet, retrained: nn.Module, test: Dataset) -> dict[str, Any]:
        """Attack-specific measurements of the retrained victim (default none); merged into attack_info."""
        return {}


#: every attack by name; filled by :func:`register_attack` and the ``poisonlab.attacks`` entry points
ATTACKS: Registry[type[Attack]] = component_registry("attack", Attack, "poisonlab.attacks")


def register_attack(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator (``pl.register_attack``): register an :class:`Attack` subclass under ``name``
    (== module name for the built-in attacks) and set its ``name``; ``replace=True`` replaces an attack
    registered under that name (e.g. a re-run notebook cell)."""
    return ATTACKS.register(name, replace=replace)


def build_attack(name: str, options: Mapping[str, Any] | None = None) -> Attack:
    """The registered attack ``name`` with ``options`` (checked by its config class)."""
    return ATTACKS.get(name)(**(options or {}))
