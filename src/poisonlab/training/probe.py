"""The victim checked once, up front: build the module and run it on one input batch before any training.

A factory that returns the wrong number of logits, a module that cannot take the data's inputs, a
forward that raises, an integer or non-finite output, a module with nothing to train or a parameter
left on another device would otherwise fail deep inside the protocol (after the split, the setup
and sometimes a whole training run) or — for a wrong logit count — train silently. :func:`check_victim`
turns each into one :class:`~poisonlab.errors.ConfigError` that names the victim, the input shape it
was given and what was expected, with the original exception chained.
"""

from __future__ import annotations

import torch
from torch import nn

from ..devices import resolve_device
from ..errors import ConfigError, PoisonlabError
from .victim import VictimSpec

#: inputs of the probe batch (two, so a module that squeezes the batch dimension is caught)
PROBE_BATCH = 2


def describe_victim(spec: VictimSpec) -> str:
    """``victim 'nn'`` for a registered architecture, ``victim factory 'make_model'`` for a user's."""
    if spec.factory is None:
        return f"victim {spec.model!r}"
    name = getattr(spec.factory, "__qualname__", None) or type(spec.factory).__name__
    code = getattr(spec.factory, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"victim factory {name!r}{where}"


def _expected(spec: VictimSpec) -> str:
    shape = ", ".join(str(s) for s in (spec.input_shape or ()))
    return f"a module mapping inputs (N, {shape}) to logits (N, {spec.num_classes})"


def build_checked(spec: VictimSpec, seed: int) -> nn.Module:
    """``spec.build(seed)``, with an exception raised inside a user's factory as a ConfigError."""
    try:
        return spec.build(seed)
    except PoisonlabError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything a user's constructor raises is a configuration error here
        raise ConfigError(f"{describe_victim(spec)} raised {type(exc).__name__} while building the module: {exc} "
                          f"(expected {_expected(spec)})") from exc


def check_victim(spec: VictimSpec, example: torch.Tensor, seed: int = 0) -> None:
    """Build ``spec`` and run it on the first :data:`PROBE_BATCH` inputs of ``example``; raise
    :class:`~poisonlab.errors.ConfigError` unless it returns finite floating logits (N, num_classes)
    that depend on trainable parameters, all on the recipe's device.

    ``spec`` must be bound to the data (:meth:`VictimSpec.for_data`); ``example`` holds real inputs of
    the data (N, *input_shape), on any device. The module built here is discarded: training builds its own.
    """
    device = resolve_device(spec.recipe.device)
    model = build_checked(spec, seed)
    who = describe_victim(spec)
    tensors = [("parameter", n, t) for n, t in model.named_parameters()] + [("buffer", n, t) for n, t in model.named_buffers()]
    elsewhere = [f"{kind} {name} on {t.device}" for kind, name, t in tensors if t.device.type != device.type
                 or (device.index is not None and t.device.index not in (None, device.index))]
    if elsewhere:
        raise ConfigError(f"{who}: after .to({device}) the module still has {', '.join(elsewhere[:3])}"
                          f"{' …' if len(elsewhere) > 3 else ''}; every parameter and buffer must be registered "
                          f"on the module so the recipe's device ({device}) applies to it")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{who}: the module has no trainable parameters (expected {_expected(spec)} with parameters to train)")
    x = example[:PROBE_BATCH].to(device)
    given = f"one input batch of shape {tuple(x.shape)} ({x.dtype}, {x.device})"
    model.eval()
    try:
        out = model(x)
    except Exception as exc:  # noqa: BLE001 - the module's own error, chained, with what it was given
        raise ConfigError(f"{who} failed on {given}: {type(exc).__name__}: {exc} (expected {_expected(spec)})") from exc
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{who} returned {type(out).__name__} on {given}; expected a logits tensor "
                          f"(N, {spec.num_classes}) — return the logits themselves, not a tuple, dict or output object")
    if not out.is_floating_point():
        raise ConfigError(f"{who} returned a {out.dtype} tensor on {given}; expected floating-point logits "
                          f"(N, {spec.num_classes}) — return the scores, not class indices")
    if tuple(out.shape) != (len(x), spec.num_classes):
        raise ConfigError(f"{who} returned shape {tuple(out.shape)} on {given}; expected logits ({len(x)}, {spec.num_classes}) "
                          f"— one row per input and one column per class (the data has {spec.num_classes} classes)")
    if out.device != x.device:
        raise ConfigError(f"{who} returned logits on {out.device} for inputs on {x.device}; keep the output on the input's device")
    if not out.requires_grad:
        raise ConfigError(f"{who}: its logits on {given} do not depend on any trainable parameter "
                          f"(a detach(), torch.no_grad() or frozen parameters in forward?); training could not change it")
    if not torch.isfinite(out.detach()).all():
        raise ConfigError(f"{who} returned non-finite logits (NaN or inf) at initialisation on {given}")
