"""THE validators of option values: one message format everywhere, ``"<what>: <key> must be ..., got <value>"``.

Config dataclasses (attacks, defenses, the training recipe, the run config) call these in
``__post_init__``, so a bad value is a :class:`~poisonlab.errors.ConfigError` before any work.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError


def _prefix(what: str) -> str:
    return f"{what}: " if what else ""


def check_int(value: Any, key: str, what: str = "", *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer >= ``minimum`` (and <= ``maximum`` when given; booleans are not integers here)."""
    if (not isinstance(value, int) or isinstance(value, bool) or value < minimum
            or (maximum is not None and value > maximum)):
        limit = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ConfigError(f"{_prefix(what)}{key} must be an integer {limit}, got {value!r}")
    return value


def check_number(value: Any, key: str, what: str = "", *, allow_zero: bool = False,
                 maximum: float | None = None) -> float:
    """A finite number > 0 (``allow_zero``: >= 0), and <= ``maximum`` when given."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero) or (maximum is not None and value > maximum):
        kind = "non-negative" if allow_zero else "positive"
        limit = f" <= {maximum:g}" if maximum is not None else ""
        raise ConfigError(f"{_prefix(what)}{key} must be a finite {kind} number{limit}, got {value!r}")
    return float(value)


def check_bool(value: Any, key: str, what: str = "") -> bool:
    """True or False (not 0 / 1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{_prefix(what)}{key} must be true or false, got {value!r}")
    return value


def check_choice(value: Any, key: str, choices: Sequence[Any], what: str = "") -> Any:
    """One of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{_prefix(what)}{key} must be one of {list(choices)}, got {value!r}")
    return value


def check_radius(radius: Any, what: str = "", key: str = "radius") -> float | None:
    """An L∞ radius: a finite number > 0 in the data's units, or None (no L∞ ball)."""
    if radius is None:
        return None
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius <= 0:
        raise ConfigError(f"{_prefix(what)}{key} must be a finite number > 0 (in the data's units, e.g. 8/255 for "
                          f"pixels in [0, 1]) or null (unconstrained), got {radius!r}")
    return float(radius)


def check_fraction(fraction: Any, key: str = "fraction", what: str = "") -> float:
    """A fraction in [0, 1]."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not (0.0 <= float(fraction) <= 1.0):
        raise ConfigError(f"{_prefix(what)}{key} must be a number in [0, 1], got {fraction!r}")
    return float(fraction)


def check_output_dir(path: Any, key: str = "out", what: str = "") -> Path:
    """A directory that is there or can be made: not an existing file, no file on the way to it, its
    nearest existing ancestor writable. Nothing is created (the caller makes it when it writes)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"{_prefix(what)}{key} must be a directory path, got {path!r}")
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{_prefix(what)}{key}: {str(p)!r} exists and is not a directory (a file?); give a directory path")
    ancestor = p
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{_prefix(what)}{key}: cannot make {str(p)!r}: {str(ancestor)!r} on its path is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{_prefix(what)}{key}: cannot write to {str(ancestor)!r} (no permission), so {str(p)!r} cannot be made")
    return p
