"""The reachability report of a target model (thesis ch. 3): τ, τ_box, τ_gauge — no poisons crafted.

One function, :func:`threshold_report`, computes what ``poisonlab threshold`` prints and what
:func:`poisonlab.threshold` returns (a :class:`~poisonlab.protocol.results.ThresholdResult`). τ (the
cross-entropy trace bound, eq. 3.6; the last layer of a network, Theorem 4) applies to every model;
the box quantities (τ_box ≤ τ_gauge) need a linear softmax model, and are ``None`` otherwise, with the reason in ``box_not_applicable``
(:func:`poisonlab.theory.linear.box_report`, the same report ``gc`` writes).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..attacks.targets import (
    TARGETS,
    TargetContext,
    check_target_supported,
    is_target_path,
    load_target,
    make_target,
    needs_context,
)
from ..autodiff import named_params
from ..cache import ArtifactCache
from ..data import poison_count
from ..data.types import ExperimentData
from ..errors import ConfigError
from ..theory import min_poison_count, multiclass_reachability
from ..theory.linear import box_report
from ..training import VictimSpec, accuracy, predict_logits
from .results import ThresholdResult
from .runner import train_clean


def clean_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[list[str], torch.Tensor]:
    """g(μ): the mean loss gradient of ``model`` over (x, y), all parameters, flattened (with their names)."""
    from ..attacks.gc import sum_gradient

    names, w = named_params(model)
    return names, sum_gradient(model, names, w, x, y, 1.0 / len(x), chunk)


def resolve_target(target: Any, data: ExperimentData, spec: VictimSpec, seed: int, *,
                   options: Mapping[str, Any] | None = None, fraction: float | None = None,
                   cache: ArtifactCache | None = None, progress: bool = False, clean: nn.Module | None = None
                   ) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    """(target model, clean model or None, info) for ``target``: a registered maker's name
    (:data:`~poisonlab.attacks.targets.TARGETS`: ``"gradpc"``, ``"reachable"``, a user's own), made
    from the clean-trained victim with ``options``; a ``.safetensors`` path; a state dict; or a module.

    A maker made for a poisoning problem (``needs_context``, e.g. ``"reachable"``) is made for D_tr,
    the data's box and the poison fraction ``fraction``, which it then requires. The maker's options
    and its conditions on the victim (:meth:`~poisonlab.attacks.targets.TargetMaker.check_supported`;
    ``"reachable"``: the box gauge) are checked before the clean victim is trained (through ``cache``),
    or taken as given: ``clean``, weights of ``spec`` trained on D_tr."""
    if isinstance(target, str) and not is_target_path(target):
        context = None
        if needs_context(target):  # an unknown name fails here, before any work
            if fraction is None:
                raise ConfigError(f"target {target!r} is made for a poison fraction: give fraction=")
            context = TargetContext(data.train, data.bounds, float(fraction))
        check_target_supported(target, clean if clean is not None else spec.build(seed), data.train.input_shape,
                               data.bounds, options)
        if clean is None:
            clean, _ = train_clean(data, spec, seed, cache=cache, progress=progress)
        model, info = make_target(target, clean, data.val, dict(options or {}), progress, cache=cache, context=context)
        return model, clean, info
    if options:
        raise ConfigError("options configure a target maker (e.g. 'gradpc'), not a saved target")
    if isinstance(target, (str, Path)):
        if not str(target).endswith(".safetensors"):
            raise ConfigError(f"target must be a maker name ({', '.join(TARGETS.names())}), a .safetensors file, "
                              f"a state dict or a module, got {target!r}")
        return load_target(target, spec.build(seed)), None, {"source": str(target)}
    if isinstance(target, nn.Module):
        return copy.deepcopy(target).eval(), None, {"source": type(target).__name__}
    if isinstance(target, Mapping):
        model = spec.build(seed)
        try:
            model.load_state_dict(dict(target))
        except RuntimeError as exc:
            raise ConfigError(f"target state does not fit the victim architecture: {str(exc).splitlines()[0]}") from None
        return model.eval(), None, {"source": "state dict"}
    raise ConfigError(f"target must be a maker name ({', '.join(TARGETS.names())}), a .safetensors file, a state dict "
                      f"or a module, got {type(target).__name__}")


def threshold_report(target: nn.Module, data: ExperimentData, *, fraction: float | None = None,
                     clean: nn.Module | None = None, target_info: Mapping[str, Any] | None = None) -> ThresholdResult:
    """τ, the minimum poison count, and — for a linear softmax target with finite bounds — τ_box,
    the box gauge τ_gauge and its label plan; with ``fraction``, whether it passes each condition."""
    train = data.train
    n = len(train)
    device = next(target.parameters()).device
    reach = multiclass_reachability(predict_logits(target, train.x), train.y)
    k_min = min_poison_count(reach.tau, n, reach.attained)
    names, g = clean_gradient(target, train.x.to(device), train.y.to(device))
    box = box_report(target, names, g, data.bounds, data.input_shape)
    tau_box, tau_gauge = box["tau_box"], box["tau_gauge"]
    checked: dict[str, Any] = {}
    if fraction is not None:
        checked = {"n_poisons_at_fraction": poison_count(fraction, n), "fraction_passes": reach.reachable(fraction),
                   "fraction_passes_box": None if tau_box is None else fraction >= tau_box,
                   "fraction_passes_gauge": None if tau_gauge is None else fraction >= tau_gauge}
    return ThresholdResult(
        target_test_accuracy=accuracy(target, data.test),
        clean_test_accuracy=accuracy(clean, data.test) if clean is not None else None,
        target_info=dict(target_info or {}),
        inner_W_G=reach.inner,
        tau=reach.tau,
        n_clean=n,
        min_poisons=int(k_min) if math.isfinite(k_min) else None,
        condition="necessary (cross-entropy trace bound, eq. 3.6)",
        clean_grad_norm_at_target=float(torch.linalg.vector_norm(g)),
        tau_box=tau_box,
        tau_gauge=tau_gauge,
        gauge_label_mix=box["gauge_label_mix"],
        box_not_applicable=box["box_not_applicable"],
        min_poisons_box=int(min_poison_count(tau_gauge, n)) if tau_gauge is not None else None,
        fraction=fraction,
        **checked,
    )

