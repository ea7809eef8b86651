"""Target models for model-targeted attacks (Gradient Canceling): a registry of ways to make one.

A *target* is a parameter vector w that the attacker wants retraining to arrive at (thesis §3.4).
``TARGETS`` maps a name to ``make(model, val, options, progress) -> (target_model, info)`` (a maker
with a ``Config`` attribute, an options dataclass, gets its options validated and completed with the
defaults first, e.g. ``"gradpc"`` and :class:`~poisonlab.attacks.gradpc.GradPCConfig`) where
``model`` is the clean-trained victim (left unchanged), ``val`` the attacker's validation set
(x (N, *input_shape) inside the data's bounds, y (N,)) and ``info`` a JSON-serialisable summary. A target may also be a
saved ``.safetensors`` state of the victim architecture (:func:`load_target`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .._version import __version__
from ..cache import ArtifactCache, cached_build, module_fingerprint, tensor_fingerprint
from ..data.types import Dataset
from ..errors import ConfigError
from ..options import config_from_dict, config_to_dict
from ..registry import Registry

#: make(model, val, options, progress) -> (target, info); a maker with ``needs_context`` also takes ``context=``
TargetMaker = Callable[..., tuple[nn.Module, dict[str, Any]]]
TARGETS: Registry[TargetMaker] = Registry("target")


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
                cache: ArtifactCache | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A registered maker by name (e.g. ``"gradpc"``) or a ``.safetensors`` path.

    A made target goes through ``cache`` (kind ``target``; the protocol passes ``--cache-dir``), keyed by
    the maker, its options, the clean model's weights and D_v: a second run with the same inputs loads it
    instead of recomputing it. ``info["cache"]`` says ``"hit"``, ``"miss"`` or None (no cache)."""
    if is_target_path(target):
        return load_target(target, model), {"source": str(target)}
    maker = TARGETS.get(target)
    config_cls = getattr(maker, "Config", None)  # a maker with an options dataclass: the key holds every option
    if config_cls is not None:
        options = config_to_dict(config_from_dict(config_cls, options, f"target {target!r}"))

    def key() -> dict[str, Any]:
        p = next(model.parameters(), None)
        return {"target": target, "options": dict(options), "model": module_fingerprint(model),
                "architecture": type(model).__qualname__,  # same weights, another trainable set: another target
                "trainable": [n for n, q in model.named_parameters() if q.requires_grad],
                "val": tensor_fingerprint(val.x, val.y), "device": p.device.type if p is not None else "cpu",
                "poisonlab_version": __version__, "torch_version": torch.__version__}

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        made, info = maker(model, val, options, progress)
        return made.state_dict(), info

    state, info, hit = cached_build(cache, "target", key, build)
    out = copy.deepcopy(model)
    out.load_state_dict(state)
    return out.eval(), {**info, "cache": ("hit" if hit else "miss") if cache is not None else None}
