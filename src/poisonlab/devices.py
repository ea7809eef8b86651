"""Devices: THE check of a device name against this machine's torch (:func:`resolve_device`).

Every recipe, command and builder that takes a ``device`` resolves it here, so ``"cuda"`` on a
CPU-only torch, ``"cuda:3"`` on a one-GPU machine or a typo is a
:class:`~poisonlab.errors.ConfigError` when the configuration is built — before any data is
loaded or any model trained — naming the argument and the devices this torch can use. The device
policy (what lives where) is in ``docs/guide/gpu.md``.
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def available_devices() -> list[str]:
    """The device names this torch can use here: ``"auto"``, ``"cpu"``, then ``"cuda"``,
    ``"cuda:0"`` ... when CUDA is usable, ``"mps"`` when Apple's MPS is."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return names


def _no_device(device: object, why: str) -> ConfigError:
    cuda = "built without CUDA" if torch.version.cuda is None else f"built with CUDA {torch.version.cuda}"
    return ConfigError(f"device={device!r}: {why}; this torch ({torch.__version__}, {cuda}) can use "
                       f"{', '.join(repr(d) for d in available_devices())}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` a recipe's ``device`` names, checked against this machine.

    ``"auto"``: CUDA when available, else the CPU. ``"cpu"``, ``"cuda"`` / ``"cuda:N"`` (CUDA must
    be usable and N < the number of GPUs), ``"mps"`` (Apple's MPS must be usable), or the same as
    a ``torch.device``. Anything else — a device this torch cannot use here, another device type,
    a malformed string, a non-string — raises :class:`~poisonlab.errors.ConfigError` naming the
    argument and the devices this torch can use (so a recipe fails when it is built, before any
    work, not in the first ``.to(device)``).
    """
    if parse_device(device) is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _no_device(device, "CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _no_device(device, f"there {'is' if torch.cuda.device_count() == 1 else 'are'} only "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
        return dev
    if not torch.backends.mps.is_available():
        raise _no_device(device, "Apple's MPS backend is not available")
    return dev


def parse_device(device: object) -> torch.device | None:
    """``device`` read as a device name, *not* checked against this machine: None for ``"auto"``,
    else the ``torch.device`` of a cpu / cuda[:N] / mps name. A configuration that may run
    elsewhere (a sweep's runs on Ray workers) is checked with this when it is built, and with
    :func:`resolve_device` where it runs. Raises :class:`~poisonlab.errors.ConfigError` otherwise."""
    if not isinstance(device, (str, torch.device)):
        raise _no_device(device, "must be a device name (a string) or a torch.device")
    if str(device) == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise _no_device(device, "is not a device name") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise _no_device(device, f"poisonlab trains on cpu, cuda or mps, not {dev.type!r}")
    return dev
