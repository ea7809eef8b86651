"""One way to build a frozen config dataclass from a dict: unknown keys are an error."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from .errors import ConfigError

C = TypeVar("C")


def config_from_dict(cls: type[C], values: Mapping[str, Any] | None, what: str) -> C:
    """``cls(**values)`` after rejecting keys that ``cls`` does not declare.

    Lists become tuples for fields whose default is a tuple (YAML has no tuples).
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {unknown}; valid options: {sorted(fields) or 'none'}")
    for k, v in list(values.items()):
        if isinstance(v, list) and isinstance(fields[k].default, tuple):
            values[k] = tuple(v)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
