"""Target models for model-targeted attacks (Gradient Canceling): a registry of ways to make one.

A *target* is a parameter vector w that the attacker wants retraining to arrive at (thesis §3.4).
``TARGETS`` maps a name to a :class:`TargetMaker` (a :class:`~poisonlab.component.Component`): its
options are the config class of its type parameter (``class GradPCTarget(TargetMaker[GradPCConfig])``,
:class:`~poisonlab.attacks.gradpc.GradPCConfig`), ``check_supported(model, input_shape, bounds)``
refuses a victim it cannot work on before any training, and ``make(model, val, progress=, context=)``
returns ``(target_model, info)``, where ``model`` is the clean-trained victim (left unchanged),
``val`` the attacker's validation set (x (N, *input_shape) inside the data's bounds, y (N,)) and
``info`` a JSON-serialisable summary. A target may also be a saved ``.safetensors`` state of the
victim architecture (:func:`load_target`). Makers are registered with :func:`register_target`
(``pl.register_target``) or the ``poisonlab.targets`` entry points.

A maker whose target depends on the poisoning problem itself — D_tr, the data's box and the poison
fraction ε, e.g. ``"reachable"`` (:mod:`poisonlab.attacks.reachable_target`) — sets
``needs_context = True`` and is given ``context=``:class:`TargetContext`.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

import torch
from torch import nn

from .._version import __version__
from ..cache import ArtifactCache, cached_build, module_fingerprint, tensor_fingerprint
from ..component import Component, component_registry
from ..data.bounds import Bounds
from ..data.types import Dataset
from ..errors import ConfigError, UnsupportedError
from ..registry import Registry
from ..theory.linear import linear_softmax_names
from ..validation import check_int, check_number

_REACHABLE = "target 'reachable'"


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    """Base of every target maker's options (``-T KEY=VALUE``; none by default)."""


@dataclass(frozen=True, kw_only=True)
class ReachableConfig(TargetConfig):
    """Options of the ``"reachable"`` target maker: gc's option group ``reachable``
    (``-A target=reachable -A reachable.steps=50``).

    Attributes:
        fraction: The poison fraction ε the target must be reachable at; null: the attack's own
            fraction (n_poison / |D_tr|). Default null.
        limit: Feasible targets have τ_gauge ≤ limit·ε (in (0, 1]; below 1 leaves GC slack: it
            reached every target with τ_gauge ≤ 0.8·ε that was measured). Default 0.8.
        band: Once τ_gauge > band·limit·ε the steps follow the constraint's tangent (in (0, 1]).
            Default 0.9.
        steps: Search steps, one box-gauge LP and one Hessian-vector product each (an integer
            >= 0; 0 keeps the clean victim when it is feasible; the LPs are the search's main cost,
            measured: docs/studies/table-2-2.md). Default 20.
        step: Step length relative to the clean weights' norm (> 0). Default 0.01.
        chunk_size: D_tr points per autograd pass (memory). Default 8192.
    """

    fraction: float | None = None
    limit: float = 0.8
    band: float = 0.9
    steps: int = 20
    step: float = 0.01
    chunk_size: int = 8192

    def __post_init__(self) -> None:
        if self.fraction is not None:
            check_number(self.fraction, "fraction", _REACHABLE)
        check_number(self.limit, "limit", _REACHABLE, maximum=1.0)
        check_number(self.band, "band", _REACHABLE, maximum=1.0)
        check_int(self.steps, "steps", _REACHABLE, minimum=0)
        check_number(self.step, "step", _REACHABLE)
        check_int(self.chunk_size, "chunk_size", _REACHABLE)


@dataclass(frozen=True, kw_only=True)
class GCPlan:
    """The settings a target maker hands to Gradient Canceling: the ones its target was measured to be
    reached with, so that what the maker certifies (``"reachable"``: τ_gauge ≤ limit·ε) is what GC runs
    with. A maker carries its plan as the attribute ``gc_plan``; ``gc`` takes each of these settings
    from it unless its own option is given (:func:`maker_plan`).

    Attributes:
        init: GC's starting points (``"plan"``: the box gauge's label mix). Required.
        steps: GC's optimisation steps. Required.
        lr: GC's step size on the poison inputs, in the data's units. Required.
        evidence: Where the plan was measured (for the record). Default ``""``.
    """

    init: str
    steps: int
    lr: float
    evidence: str = ""


def check_gauge_applies(model: nn.Module, input_shape: Sequence[int], bounds: Bounds, what: str = _REACHABLE) -> tuple[str, str]:
    """The (weight, bias) names of a linear softmax ``model`` whose every trainable parameter is W or b,
    over a box with a finite side; else :class:`~poisonlab.errors.UnsupportedError` saying why."""
    lin = linear_softmax_names(model, input_shape)
    if lin is None:
        raise UnsupportedError(
            f"{what}: the box gauge τ_gauge, which the search holds to ≤ ε, exists for linear softmax victims only "
            f"(logits = W·flatten(x) + b, e.g. 'lr'); {type(model).__name__} is not one. Use target 'gradpc' or a "
            "saved target (and the last-layer τ of 'poisonlab threshold') instead")
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    if trainable != sorted(lin):
        raise UnsupportedError(f"{what}: the box gauge needs W and b both trainable and nothing else; trainable: {trainable}")
    if bool(torch.isinf(bounds.lower).all() and torch.isinf(bounds.upper).all()):
        raise UnsupportedError(f"{what}: the data is unbounded (every bound is infinite): no box gauge constrains the target")
    return lin


@dataclass(frozen=True)
class TargetContext:
    """The poisoning problem a context-dependent target maker (``needs_context``) is made for.

    Attributes:
        train: D_tr, the clean training set the poisons join (x (N, *input_shape), y (N,)). Required.
        bounds: The data's box, the admissible poison inputs. Required.
        fraction: The poison fraction ε = n_poison / |D_tr| of the attack. Required.
    """

    train: Dataset
    bounds: Bounds
    fraction: float


#: a maker's config type: ``class GradPCTarget(TargetMaker[GradPCConfig])``
TC = TypeVar("TC", bound=TargetConfig)
T = TypeVar("T", bound=type)


class TargetMaker(Component[TC]):
    """Base class of target makers (a :class:`~poisonlab.component.Component`): subclass
    ``TargetMaker[XConfig]`` (XConfig a :class:`TargetConfig` subclass), register it with
    :func:`register_target`, implement :meth:`make` (and :meth:`check_supported` when the victim may
    not fit).

    What ``poisonlab target`` / ``threshold`` print of a maker's info are its ``report_keys`` (empty:
    every scalar entry); what they save with the target file as safetensors metadata, its
    ``metadata_keys``."""

    kind: ClassVar[str] = "target"
    config_base: ClassVar[type] = TargetConfig
    Config: ClassVar[type[TargetConfig]]
    #: True: the target is made for a poisoning problem, :meth:`make` gets ``context=``:class:`TargetContext`
    needs_context: ClassVar[bool] = False
    #: the settings gc runs this maker's targets with unless told otherwise (:func:`maker_plan`)
    gc_plan: ClassVar[GCPlan | None] = None
    #: the info keys the CLI prints (empty: every entry whose value is a number, a string, a bool or None)
    report_keys: ClassVar[tuple[str, ...]] = ()
    #: the info keys saved with a target file (safetensors metadata, as strings)
    metadata_keys: ClassVar[tuple[str, ...]] = ()

    def check_supported(self, model: nn.Module, input_shape: Sequence[int], bounds: Bounds) -> None:  # noqa: B027
        """Raise :class:`~poisonlab.errors.UnsupportedError` (saying why) when this maker cannot work on
        the victim ``model`` (untrained: called before the clean victim is trained) and the data's
        ``input_shape`` / ``bounds``. Default: supported."""

    @abstractmethod
    def make(self, model: nn.Module, val: Dataset, *, progress: bool = False,
             context: TargetContext | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """(target model, info) made from the clean-trained ``model`` (left unchanged) and the attacker's
        validation set ``val``; ``context`` is given exactly when ``needs_context``."""

    @classmethod
    def report(cls, info: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of a made target's ``info`` that the CLI prints (:attr:`report_keys`)."""
        if cls.report_keys:
            return {k: info.get(k) for k in cls.report_keys}
        return {k: v for k, v in info.items() if v is None or isinstance(v, (str, int, float, bool))}


#: every target maker by name; filled by :func:`register_target` and the ``poisonlab.targets`` entry points
TARGETS: Registry[type[TargetMaker]] = component_registry("target", TargetMaker, "poisonlab.targets")


def register_target(name: str, *, replace: bool = False) -> Callable[[T], T]:
    """Class decorator (``pl.register_target``): register a :class:`TargetMaker` subclass under ``name``
    and set its ``name``; ``replace=True`` replaces a maker registered under that name."""
    return TARGETS.register(name, replace=replace)


def maker_plan(target: str) -> GCPlan | None:
    """The :class:`GCPlan` of the registered maker ``target`` (its ``gc_plan``), or None: a saved
    target, or a maker without a plan (``"gradpc"``)."""
    if is_target_path(target):
        return None
    plan = TARGETS.get(target).gc_plan
    return plan if isinstance(plan, GCPlan) else None


def needs_context(target: str) -> bool:
    """Whether the registered maker ``target`` is made for a poisoning problem (D_tr, the box, ε), i.e.
    takes ``context=``:class:`TargetContext` (``"reachable"``)."""
    return TARGETS.get(target).needs_context


def check_target_supported(target: str, model: nn.Module, input_shape: Sequence[int], bounds: Bounds,
                           options: Mapping[str, Any] | None = None) -> None:
    """The maker ``target``'s :meth:`TargetMaker.check_supported` (with ``options``, checked first):
    an :class:`~poisonlab.errors.UnsupportedError` saying why the maker cannot work on this victim and
    data (``"reachable"``: :func:`check_gauge_applies`), called before the clean victim is trained."""
    TARGETS.get(target)(**dict(options or {})).check_supported(model, input_shape, bounds)


def is_target_path(target: str) -> bool:
    return target.endswith(".safetensors")


def load_target(path: str | Path, like: nn.Module) -> nn.Module:
    """A copy of ``like`` with the weights of the safetensors file ``path`` (shapes must match)."""
    from ..artifacts import load_state

    state = load_state(path)
    model = copy.deepcopy(like)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"target {path} does not fit the victim architecture: {str(exc).splitlines()[0]}") from None
    return model.eval()


def make_target(target: str, model: nn.Module, val: Dataset, options: Mapping[str, Any], progress: bool = False,
                cache: ArtifactCache | None = None, context: TargetContext | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A registered maker by name (e.g. ``"gradpc"``) or a ``.safetensors`` path.

    A made target goes through ``cache`` (kind ``target``; the protocol passes ``--cache-dir``), keyed by
    the maker, its options, the clean model's weights and D_v (and, for a maker with ``needs_context``,
    D_tr, the box and ε of ``context``, which it then requires): a second run with the same inputs loads it
    instead of recomputing it. ``info["cache"]`` says ``"hit"``, ``"miss"`` or None (no cache)."""
    if is_target_path(target):
        return load_target(target, model), {"source": str(target)}
    maker = TARGETS.get(target)(**dict(options))  # options checked, defaults filled in (canonical cache keys)
    with_context = maker.needs_context
    if with_context and context is None:
        raise ConfigError(f"target {target!r} is made for a poisoning problem (D_tr, the data's box and the poison "
                          "fraction): use it through an attack (e.g. gc's target: reachable) or pass context=")
    options = maker.options()

    def key() -> dict[str, Any]:
        p = next(model.parameters(), None)
        return {"target": target, "options": dict(options), "model": module_fingerprint(model),
                "architecture": type(model).__qualname__,  # same weights, another trainable set: another target
                "trainable": [n for n, q in model.named_parameters() if q.requires_grad],
                "val": tensor_fingerprint(val.x, val.y), "device": p.device.type if p is not None else "cpu",
                "poisonlab_version": __version__, "torch_version": torch.__version__,
                **({"context": {"train": tensor_fingerprint(context.train.x, context.train.y),
                                "bounds": tensor_fingerprint(context.bounds.lower.reshape(-1), context.bounds.upper.reshape(-1)),
                                "fraction": float(context.fraction)}} if with_context and context is not None else {})}

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        made, info = maker.make(model, val, progress=progress, context=context if with_context else None)
        return made.state_dict(), info

    state, info, hit = cached_build(cache, "target", key, build)
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out.eval(), {**info, "cache": ("hit" if hit else "miss") if cache is not None else None}
