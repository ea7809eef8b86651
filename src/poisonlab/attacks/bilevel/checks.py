"""The option checks the bilevel attacks share (steps, batch sizes, working precision, option groups)."""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError
from ...validation import check_choice, check_int, check_number

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_dtype(name: str, what: str) -> None:
    """``dtype`` is one of :data:`DTYPES` (the attacks' working precision)."""
    check_choice(name, "dtype", sorted(DTYPES), what)


def check_steps(cfg: Any, what: str) -> None:
    """The step, batch and precision options the bilevel attacks share: ``leader_lr`` a number > 0,
    ``follower_lr`` one or null, ``batch_size`` and (where ``cfg`` has it) ``val_batch_size`` integers
    >= 1 or null, ``dtype`` one of :data:`DTYPES`."""
    check_number(cfg.leader_lr, "leader_lr", what)
    if cfg.follower_lr is not None:
        check_number(cfg.follower_lr, "follower_lr", what)
    for key in ("batch_size", "val_batch_size"):
        if getattr(cfg, key, None) is not None:
            check_int(getattr(cfg, key), key, what)
    check_dtype(cfg.dtype, what)


def check_group(value: Any, cls: type, key: str, what: str) -> None:
    """An option group's value is its config class (a mapping became one in :func:`poisonlab.options.config_from_dict`)."""
    if not isinstance(value, cls):
        raise ConfigError(f"{what}: {key} is an option group; give it as a mapping or as {key}.<option>=value, "
                          f"got {value!r}")
