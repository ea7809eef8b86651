"""Seeds: every stage draws from its own generator derived from (seed, stage name); the global-RNG
fork every seeded module construction goes through (:func:`seeded_rng`); generators on the device
the random numbers are used on (:func:`device_generator`); and the determinism / TF32 policy of a
run (:func:`apply_determinism`, :func:`determinism_settings`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any, Iterator

import torch

from .errors import ConfigError


def derive_seed(seed: int, stage: str) -> int:
    """A 63-bit seed that depends only on ``seed`` and the stage name."""
    digest = hashlib.sha256(f"{int(seed)}/{stage}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, stage: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for one stage."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, stage))
    return g


def draw_seed(generator: torch.Generator) -> int:
    """THE way to derive a seed from a running generator: one draw of a 62-bit integer (deterministic
    under the generator's seed)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def child_generator(generator: torch.Generator) -> torch.Generator:
    """A fresh CPU generator seeded by :func:`draw_seed` from ``generator``."""
    return torch.Generator().manual_seed(draw_seed(generator))


def device_generator(generator: torch.Generator, device: torch.device | str) -> torch.Generator:
    """A generator whose random numbers are drawn directly on ``device`` (no host draw + copy).

    ``generator`` itself when it already lives on ``device``'s type (on CPU: the same stream as
    before, so CPU runs stay bit-identical); otherwise a new generator on ``device``, seeded by
    one :func:`draw_seed` from ``generator`` (so the device stream is still a function of the
    run's seed). Draw with ``torch.rand*(..., generator=g, device=g.device)``.
    """
    dev = torch.device(device)
    if generator.device.type == dev.type and (dev.index is None or generator.device.index == dev.index):
        return generator
    if dev.type == "meta":  # value-free tests: meta tensors take no generator; keep the host stream
        return generator
    return torch.Generator(device=dev).manual_seed(draw_seed(generator))


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Inside: torch's global RNG seeded with ``seed``; on exit every global RNG state is restored.

    THE way to build a module whose default initialisation must depend only on ``seed`` (victims,
    generators, extractors, VAEs). ``torch.random.fork_rng(devices=[])`` + ``torch.manual_seed``
    is not: ``manual_seed`` also (re)seeds every CUDA device (lazily, even before CUDA is
    initialised), and ``devices=[]`` does not restore them. Here the CPU generator is seeded, and
    the CUDA generators too — forked and restored — only when CUDA is already initialised in this
    process or ``device`` is a CUDA device (work inside that runs on the GPU, e.g. dropout, then
    draws seeded numbers); otherwise CUDA's RNG is never touched.
    """
    on_cuda = device is not None and torch.device(device).type == "cuda"
    devices = list(range(torch.cuda.device_count())) if on_cuda or torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(int(seed))
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(int(seed))
        yield


# ------------------------------------------------------------------------- determinism / TF32
#: environment variable with the default mode of :func:`apply_determinism` ("warn", "error", "off")
DETERMINISM_ENV = "POISONLAB_DETERMINISTIC"
DETERMINISM_MODES = ("warn", "error", "off")


def apply_determinism(mode: str | None = None) -> dict[str, Any]:
    """Set torch's determinism and TF32 switches for a run; returns :func:`determinism_settings`.

    ``mode`` (default: ``$POISONLAB_DETERMINISTIC``, else ``"warn"``):

    - ``"warn"`` (default): cuDNN deterministic, cuDNN benchmark off, TF32 off for matmul and
      cuDNN (float32 stays float32 on Ampere+ GPUs), float32 matmul precision "highest",
      ``torch.use_deterministic_algorithms(True, warn_only=True)`` (a kernel without a
      deterministic implementation warns instead of failing), uninitialised memory not filled
      (``torch.empty`` stays free), and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` when it is unset
      (cuBLAS needs it for reproducible results; it is read when cuBLAS starts, so it stays set);
    - ``"error"``: the same, but a kernel without a deterministic implementation raises;
    - ``"off"``: torch's algorithm defaults (no deterministic flag, cuDNN benchmark allowed),
      TF32 still off (float32 means float32).

    On CPU these switches change no number; on a GPU they are what bit-identity needs. The
    protocol runner applies them once per run inside :func:`deterministic`, which restores the
    previous switches afterwards (a notebook's own settings survive a run).
    """
    mode = mode if mode is not None else os.environ.get(DETERMINISM_ENV, "warn")
    if mode not in DETERMINISM_MODES:
        raise ConfigError(f"determinism mode (${DETERMINISM_ENV}) must be one of {list(DETERMINISM_MODES)}, got {mode!r}")
    strict = mode != "off"
    if strict:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = strict
    torch.backends.cudnn.benchmark = False if strict else torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(strict, warn_only=mode == "warn")
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return determinism_settings()


def determinism_settings() -> dict[str, Any]:
    """The determinism / TF32 switches in force now, a JSON-ready dict (for a run's record)."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "fill_uninitialized_memory": bool(torch.utils.deterministic.fill_uninitialized_memory),  # type: ignore[attr-defined]
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


@contextlib.contextmanager
def deterministic(mode: str | None = None) -> Iterator[dict[str, Any]]:
    """:func:`apply_determinism` inside (yields its settings); the previous switches on exit."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    try:
        yield apply_determinism(mode)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]  # type: ignore[attr-defined]
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[3], before[4]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[5], before[6]
        torch.set_float32_matmul_precision(before[7])
