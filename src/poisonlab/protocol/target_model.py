"""A target model for a run spec (thesis ch. 3): the clean victim trained (or loaded), a target made
from it by a registered maker (:data:`~poisonlab.attacks.targets.TARGETS`) or read from a file, and
saved as safetensors with its metadata, or its reachability report — what ``poisonlab target`` and
``poisonlab threshold`` do (:func:`poisonlab.make_target`, :func:`poisonlab.threshold_spec`). The target itself comes from
:func:`~poisonlab.protocol.reachability.resolve_target`, as in :func:`poisonlab.threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..artifacts import load_state, save_model
from ..attacks.targets import TARGETS, is_target_path, load_target, needs_context
from ..cache import as_cache
from ..data.types import ExperimentData
from ..errors import ConfigError
from ..training import accuracy
from ..validation import check_fraction
from .config import RunSpec
from .prepare import prepare
from .reachability import resolve_target, threshold_report
from .results import ThresholdResult


@dataclass(frozen=True)
class SpecTarget:
    """A target resolved for a run spec: the run's ``data``, the ``target`` model, the ``clean`` model
    (None for a saved target), the maker's ``info`` and the ``target`` argument it came from."""

    data: ExperimentData
    model: nn.Module
    clean: nn.Module | None
    info: dict[str, Any]
    target: str


def check_target_request(target: str, fraction: float, options: Mapping[str, Any] | None, *, files: bool = True) -> None:
    """``target`` a registered maker (plugins included) or, with ``files``, an existing ``.safetensors``
    file (which takes no ``options``); ``fraction`` in (0, 1]; ``options`` the maker's (its config
    class builds from them). Raises :class:`~poisonlab.errors.ConfigError` before any work."""
    check_fraction(fraction, "fraction")
    if not fraction > 0:
        raise ConfigError(f"fraction must be > 0, got {fraction!r}")
    if is_target_path(target):
        if not files:
            raise ConfigError(f"target {target}: a target is made here by a maker ({', '.join(TARGETS.names())}), "
                              "not read from a file")
        if not Path(target).is_file():
            raise ConfigError(f"target {target}: no such file")
        if options:
            raise ConfigError(f"target {target}: a saved target takes no maker options")
        return
    if target not in TARGETS:
        raise ConfigError(f"unknown target {target!r}: give a target maker ({', '.join(TARGETS.names())})"
                          + (" or a .safetensors file" if files else ""))
    TARGETS.get(target)(**dict(options or {}))  # unknown keys, bad values


def resolve_spec_target(spec: RunSpec, target: str, *, fraction: float, options: Mapping[str, Any] | None = None,
                        clean: str | Path | None = None, progress: bool = False, files: bool = True) -> SpecTarget:
    """Validate (:func:`check_target_request`), load the run's data, then
    :func:`~poisonlab.protocol.reachability.resolve_target` (the maker's conditions on the victim
    before any training; the clean victim from the weights file ``clean`` or trained through
    ``spec.cache_dir``)."""
    check_target_request(target, fraction, options, files=files)
    data, vspec = prepare(spec)
    start = None
    if clean is not None and not is_target_path(target):
        start = load_target(clean, vspec.build(spec.seed))
    model, made_from, info = resolve_target(target, data, vspec, spec.seed, options=options, fraction=fraction,
                                            cache=as_cache(spec.cache_dir), progress=progress, clean=start)
    return SpecTarget(data, model, made_from, info, target)


def target_summary(target: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """The maker's info that the commands print (its ``report_keys``) and ``cache``: "hit" (the target,
    and its seconds, come from an earlier build), "miss" or None; a file: its ``source``."""
    shown = {"source": info.get("source")} if is_target_path(target) else TARGETS.get(target).report(info)
    return {**shown, "cache": info.get("cache")}


def save_target(path: str | Path, made: SpecTarget, model_name: str) -> None:
    """Save the target as safetensors with its model, stage (``target:<maker>``) and the maker's
    ``metadata_keys``; read back once (written and readable)."""
    from_maker = not is_target_path(made.target)
    keys = TARGETS.get(made.target).metadata_keys if from_maker else ()
    save_model(path, made.model, {"model": model_name, "stage": f"target:{made.target}" if from_maker else "target",
                                  **{k: str(made.info[k]) for k in keys if k in made.info}})
    load_state(path)


def make_target_file(spec: RunSpec, target: str, *, fraction: float = 0.03, options: Mapping[str, Any] | None = None,
                     clean: str | Path | None = None, out: str | Path = "target.safetensors",
                     progress: bool = False) -> dict[str, Any]:
    """Make the target of the registered maker ``target`` for ``spec`` (its data, victim, recipe, seed,
    cache), save it to ``out`` (:func:`save_target`) and return the summary ``poisonlab target``
    prints: dataset, model, target, out, the fraction (makers made for a poisoning problem), the
    clean and target test accuracies (%), and the maker's reported info (:func:`target_summary`)."""
    made = resolve_spec_target(spec, target, fraction=fraction, options=options, clean=clean, progress=progress,
                               files=False)
    assert made.clean is not None  # a maker always starts from the clean victim
    save_target(out, made, spec.model)
    return {
        "dataset": spec.dataset, "model": spec.model, "target": target, "out": str(out),
        **({"fraction": fraction} if needs_context(target) else {}),
        "clean_test_accuracy": accuracy(made.clean, made.data.test),
        "target_test_accuracy": accuracy(made.model, made.data.test),
        **target_summary(target, made.info),
    }


def threshold_of_spec(spec: RunSpec, target: str, *, fraction: float = 0.03, options: Mapping[str, Any] | None = None,
                      clean: str | Path | None = None, save_to: str | Path | None = None,
                      progress: bool = False) -> ThresholdResult:
    """The reachability report (:func:`~poisonlab.protocol.reachability.threshold_report`) of the
    target ``target`` (a registered maker or a ``.safetensors`` file) for ``spec`` at ``fraction``,
    as ``poisonlab threshold`` prints it: its ``target_info`` is what the commands show of the maker's
    info (:func:`target_summary`). With ``save_to``, the target is also saved there (:func:`save_target`)."""
    made = resolve_spec_target(spec, target, fraction=fraction, options=options, clean=clean, progress=progress)
    if save_to is not None:
        save_target(save_to, made, spec.model)
    report = threshold_report(made.model, made.data, fraction=fraction, clean=made.clean, target_info=made.info)
    return replace(report, target_info=target_summary(target, made.info))
