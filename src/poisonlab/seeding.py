"""Seeds: every stage draws from its own generator derived from (seed, stage name)."""

from __future__ import annotations

import hashlib

import torch


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
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def child_generator(generator: torch.Generator) -> torch.Generator:
    """A fresh CPU generator seeded by :func:`draw_seed` from ``generator``."""
    return torch.Generator().manual_seed(draw_seed(generator))
