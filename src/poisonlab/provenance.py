"""What produced a record: the code, the machine and the switches that change a run's numbers.

Two runs with the same config and seed are bit-identical only on the same commit, torch thread
count, device and determinism switches (docs/guide/protocol.md): TGDA on MNIST LR drops 3.64 with
2 torch threads and 2.79 with 1. :func:`run_environment` records all of them, so every
``result.json``, sweep row and evaluation row says which of its neighbours it can be compared with.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .seeding import determinism_settings


def source_commit() -> dict[str, Any] | None:
    """The git commit this package's source is at, and whether the checkout had local changes —
    or None when the package is not inside a git checkout of its own source (an installed wheel).
    Asked anew each call (two short git calls): a long-lived process that commits records the new commit."""
    here = Path(__file__).resolve()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(here.parent), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # the package's own file is tracked: the checkout is ours
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    """A human name of ``device``: the GPU's name for CUDA, the processor's for the CPU."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_name()
    return device.type


def run_environment(device: torch.device | str) -> dict[str, Any]:
    """The record of what a run ran on (JSON-ready): package, torch and Python versions, the git
    commit (in a checkout), the torch thread counts, the device and its name, the determinism switches."""
    git = source_commit()
    return {
        "poisonlab_version": __version__,
        "git_commit": git["commit"] if git else None,
        "git_dirty": git["dirty"] if git else None,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "determinism": determinism_settings(),
    }
