"""The defense interface: a per-point suspicion score, one shared filter, one retrain.

Threat model (defender's side of the thesis protocol, §2.6.6): the defender receives the training
set D = D_tr ∪ D_p (N points, poison mask *not* visible), the victim spec (architecture + recipe +
seed) and optionally a small trusted clean ``reference`` set; it may train models on D. A
*sanitisation* defense scores every point (higher = more suspicious), removes the
``poison_count(fraction, N)`` highest-scoring points with :func:`filter_scores` and retrains the
victim from scratch on what is kept. A *training-time* defense (MaxUp) removes nothing and changes
the training objective instead (:meth:`Defense.fit`).

Every defense is called the same way::

    d = DEFENSES.get("loss")(fraction=0.03)
    scored = d.score(data, victim, generator=g)            # .scores (N,) float64, finite; .info
    outcome = d.defend(data, victim, scored, generator=g)  # scores, keep mask, retrained model, info

Scoring and defending are two steps: the scores can be inspected (ROC-AUC, a histogram) before
the filter and the retrain, and are computed once. ``score`` and ``defend`` are final: ``score``
calls :meth:`Defense.check_supported` before any work (a defense whose mathematics or architecture
does not fit the victim or the data raises :class:`~poisonlab.errors.UnsupportedError` there,
saying why) and checks the contract (one finite score per point, the input not mutated) around the
subclass's ``_score``.

Data and models. A defense sees inputs of any shape (N, *input_shape) — (N, d) tabular features,
(N, C, H, W) images — inside the data's :class:`~poisonlab.data.bounds.Bounds` (``data.bounds``,
not necessarily [0, 1]), and a victim that may be a user's own ``nn.Module``
(:class:`~poisonlab.training.victim.VictimSpec` with a ``factory``). Defenses that read the
victim's head or penultimate features find it as described in :mod:`poisonlab.defenses._grads`.

Diagnostics. ``_score`` returns the scores, or a pair ``(scores, info)`` with ``info`` a
JSON-serialisable dict of diagnostics; they come back as :attr:`DefenseScores.info` and
:attr:`DefenseOutcome.info`, as an attack's come back in :attr:`PoisonSet.info` (the only way
they travel: a defense instance keeps no state between calls).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, TypeVar, Union, final

import torch
from torch import nn

from ..component import Component, component_registry
from ..data.splits import check_fraction, poison_count
from ..data.types import Dataset, PoisonedDataset
from ..errors import ConfigError, ContractError
from ..registry import Registry
from ..training.victim import Victim


@dataclass(frozen=True, kw_only=True)
class DefenseConfig:
    """Options shared by every defense: the fraction of the training set to remove.

    ``fraction`` is a fraction of the N points the defender sees (D_tr ∪ D_p); the count removed
    is ``poison_count(fraction, N)`` (the one rounding rule). Default 3 % = the thesis' budget.
    This is also the whole config of the ``loss`` defense; every other defense's ``Config``
    subclasses it and inherits ``fraction``.

    Attributes:
        fraction: Fraction of the N points the defender sees (D_tr ∪ D_p) that the shared filter
            (:func:`filter_scores`) removes, the highest-scoring ``poison_count(fraction, N)``
            of them; a number in [0, 1] (a fraction, not a percentage). Default 0.03 (3 %, the
            thesis' poison budget). Training-time defenses (``maxup``) remove nothing and ignore
            it for filtering; ``art_spectral`` also uses it as ART's ``expected_pp_poison`` when
            that is None.
    """

    fraction: float = 0.03

    def __post_init__(self) -> None:
        try:
            check_fraction(self.fraction)
        except ConfigError as exc:
            raise ConfigError(f"defense: {exc}") from None


def filter_scores(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """THE filter: a keep mask (N,) bool that drops the ``poison_count(fraction, N)`` highest scores.

    Ties are broken by index (the earlier point is removed first), so the result is deterministic.
    """
    if scores.ndim != 1:
        raise ContractError(f"scores must be a vector (N,), got shape {tuple(scores.shape)}")
    n = len(scores)
    k = poison_count(fraction, n)
    keep = torch.ones(n, dtype=torch.bool, device="cpu")  # masks index the CPU datasets
    if k:
        order = torch.sort(scores.detach().cpu().double(), descending=True, stable=True).indices
        keep[order[:k]] = False
    return keep


@dataclass(frozen=True)
class DefenseScores:
    """What :meth:`Defense.score` returns: ``scores`` (N,) float64 (higher = more suspicious) and
    ``info``, the defense's diagnostics of this call (JSON-serialisable); :meth:`Defense.defend`
    takes it."""

    scores: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DefenseOutcome:
    """What a defense produced: ``scores`` (N,) float64, ``keep`` (N,) bool, the retrained model and
    ``info``, the defense's diagnostics (JSON-serialisable; e.g. influence's CG iterations)."""

    scores: torch.Tensor
    keep: torch.Tensor
    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_removed(self) -> int:
        return int((~self.keep).sum())


def as_dataset(data: PoisonedDataset | Dataset) -> Dataset:
    """The points the defender sees (the poison mask is never passed to a defense)."""
    return data.dataset if isinstance(data, PoisonedDataset) else data


#: what ``_score`` returns: the scores, or the scores and a dict of diagnostics
ScoreResult = Union[torch.Tensor, "tuple[torch.Tensor, dict[str, Any]]"]


#: a defense's config type: ``class KnnDefense(Defense[KnnConfig])`` makes ``self.config`` a ``KnnConfig``
C = TypeVar("C", bound=DefenseConfig)
T = TypeVar("T", bound=type)


class Defense(Component[C]):
    """Base class (a :class:`~poisonlab.component.Component`). Subclasses subclass ``Defense[XConfig]``,
    are registered with :func:`register_defense` (which sets ``name``), set ``summary``, and implement
    ``_score`` (and ``check_supported`` when the victim or the data may not fit); training-time defenses
    set ``removes = False`` and override ``fit``. The type parameter is the one declaration of the
    config class: it types ``self.config`` for mypy and, read at class creation
    (:func:`~poisonlab.options.config_class`), sets ``Config``, the class the registry builds from
    (a subclass without a parameter inherits its parent's; ``class X(Defense)`` is a TypeError)."""

    kind: ClassVar[str] = "defense"
    config_base: ClassVar[type] = DefenseConfig
    #: the config class, derived from the type parameter (never set in a class body)
    Config: ClassVar[type[DefenseConfig]]
    summary: ClassVar[str] = ""
    #: False for training-time defenses (MaxUp): the filter keeps every point
    removes: ClassVar[bool] = True

    def check_supported(self, data: Dataset, victim: Victim) -> None:  # noqa: B027 - an optional hook, not abstract
        """Raise :class:`~poisonlab.errors.UnsupportedError` (saying why) when this defense cannot run
        on ``victim`` / ``data`` (the points the defender sees); called by :meth:`score` before any
        work, and by :meth:`defend` before it retrains. Default: supported."""

    # ------------------------------------------------------------------ public, final
    @final
    def score(
        self,
        data: PoisonedDataset | Dataset,
        victim: Victim,
        *,
        generator: torch.Generator,
        model: nn.Module | None = None,
        reference: Dataset | None = None,
        progress: bool = False,
    ) -> DefenseScores:
        """Suspicion scores, ``.scores`` (N,) float64, higher = more suspicious, and the defense's
        diagnostics of this call, ``.info``. Do not override: implement ``_score``.

        ``model``: the victim already trained on ``data`` (saves a retrain; trained here when None).
        ``reference``: a trusted clean set (used by ``influence``; optional elsewhere).
        """
        ds = as_dataset(data)
        self.check_supported(ds, victim)
        before = (ds.x.clone(), ds.y.clone())
        out = self._score(ds, victim, generator=generator, model=model, reference=reference, progress=progress)
        info: Any = {}
        if isinstance(out, tuple):
            if len(out) != 2:
                raise ContractError(f"defense {self.name!r}: _score must return scores or (scores, info)")
            out, info = out
        if not isinstance(out, torch.Tensor):
            raise ContractError(f"defense {self.name!r} returned scores of type {type(out).__name__}, expected a tensor")
        if not isinstance(info, dict):
            raise ContractError(f"defense {self.name!r}: its diagnostics (info) must be a dict")
        if not (torch.equal(before[0], ds.x) and torch.equal(before[1], ds.y)):
            raise ContractError(f"defense {self.name!r} mutated its input data")
        out = out.detach().to("cpu", torch.float64)
        if out.shape != (len(ds),):
            raise ContractError(f"defense {self.name!r} returned scores of shape {tuple(out.shape)}, expected ({len(ds)},)")
        if not torch.isfinite(out).all():
            raise ContractError(f"defense {self.name!r} returned non-finite scores")
        return DefenseScores(out, dict(info))

    def keep_mask(self, scores: torch.Tensor) -> torch.Tensor:
        """The shared filter at this defense's fraction (keeps all for training-time defenses)."""
        if not self.removes:
            return torch.ones(len(scores), dtype=torch.bool, device="cpu")
        return filter_scores(scores, self.config.fraction)

    def fit(self, data: Dataset, victim: Victim, *, generator: torch.Generator, progress: bool = False) -> nn.Module:
        """Train the defended victim on ``data`` (the kept points). Default: the plain recipe."""
        return victim.spec.train(data, victim.seed, progress="defended retrain" if progress else False)

    @final
    def defend(self, data: PoisonedDataset | Dataset, victim: Victim, scored: DefenseScores, *,
               generator: torch.Generator, progress: bool = False) -> DefenseOutcome:
        """Filter ``data`` by ``scored`` (what :meth:`score` returned for this ``data``) and retrain
        from scratch on the kept points; the outcome carries the scores, the keep mask, the retrained
        model and the diagnostics (``info``) of the scoring. Calls :meth:`check_supported` first."""
        ds = as_dataset(data)
        self.check_supported(ds, victim)
        if not isinstance(scored, DefenseScores):
            raise TypeError(f"defend takes the DefenseScores that score() returned, got {type(scored).__name__}")
        if scored.scores.shape != (len(ds),):
            raise ConfigError(f"defense {self.name!r}: {tuple(scored.scores.shape)} scores for {len(ds)} points; "
                              "score() the same data that is defended")
        keep = self.keep_mask(scored.scores)
        trained = self.fit(ds.subset(keep.nonzero().squeeze(1)), victim, generator=generator, progress=progress)
        return DefenseOutcome(scored.scores, keep, trained, dict(scored.info))

    # ------------------------------------------------------------------ helpers for subclasses
    @staticmethod
    def trained_model(data: Dataset, victim: Victim, model: nn.Module | None, progress: bool) -> nn.Module:
        """``model`` if given, else the victim trained from scratch on ``data`` with its recipe."""
        if model is not None:
            return model.eval()
        return victim.spec.train(data, victim.seed, progress="defense: train on D" if progress else False)

    @abstractmethod
    def _score(
        self,
        data: Dataset,
        victim: Victim,
        *,
        generator: torch.Generator,
        model: nn.Module | None,
        reference: Dataset | None,
        progress: bool,
    ) -> ScoreResult:
        """Return one finite score per point of ``data`` (higher = more suspicious), or the pair
        ``(scores, info)`` with a JSON-serialisable dict of diagnostics."""


#: every defense by name; filled by :func:`register_defense` and the ``poisonlab.defenses`` entry points
DEFENSES: Registry[type[Defense]] = component_registry("defense", Defense, "poisonlab.defenses")


def register_defense(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator (``pl.register_defense``): register a :class:`Defense` subclass under ``name``
    (== module name for the built-in defenses) and set its ``name``. A name already taken raises
    unless ``replace=True`` (e.g. a notebook cell that defines a defense and is run again), which puts
    the class in place of the old entry."""
    return DEFENSES.register(name, replace=replace)


def build_defense(name: str, options: Mapping[str, Any] | None = None) -> Defense:
    """The registered defense ``name`` with ``options`` (checked by its config class)."""
    return DEFENSES.get(name)(**(options or {}))


__all__ = [
    "DEFENSES", "Defense", "DefenseConfig", "DefenseOutcome", "DefenseScores", "ScoreResult", "as_dataset",
    "build_defense", "filter_scores", "register_defense",
]
