"""One way to build a frozen config dataclass from a dict: unknown keys are an error.

Option groups: a field whose default is itself a config dataclass (``target: GradPCConfig``) is a
*group*; it is addressed by a nested mapping (``{"target": {"steps": 200}}``, YAML) or a dotted key
(``{"target.steps": 200}``, the CLI's ``-A target.steps=200``); fields a mapping leaves out keep the
group's defaults. Presets: a config class may declare ``PRESETS = {"thesis": {...}}``; the key
``preset`` applies one of them first, and explicit keys override it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")

#: the key that selects one of a config class's ``PRESETS``
PRESET_KEY = "preset"


def _nest(values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``{"a.b": 1, "a": {"c": 2}}`` -> ``{"a": {"b": 1, "c": 2}}`` (dotted keys become nested mappings)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"{what}: option names must be strings, got {key!r}")
        head, dot, rest = key.partition(".")
        if dot:
            sub = out.setdefault(head, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{what}: {head!r} is given both as a value and as a group ({key!r})")
            sub[rest] = value
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            if key in out and isinstance(out[key], dict):
                raise ConfigError(f"{what}: {key!r} is given both as a value and as a group")
            out[key] = value
    return out


def group_class(f: dataclasses.Field) -> type | None:
    """The config dataclass of a group field (its default or default_factory is one), else None."""
    default = f.default if f.default is not dataclasses.MISSING else None
    if default is None and f.default_factory is not dataclasses.MISSING:
        try:
            default = f.default_factory()
        except TypeError:
            return None
    return type(default) if dataclasses.is_dataclass(default) and not isinstance(default, type) else None


def config_from_dict(cls: type[C], values: Mapping[str, Any] | None, what: str) -> C:
    """``cls(**values)`` after rejecting keys that ``cls`` does not declare.

    Lists become tuples for fields whose default is a tuple (YAML has no tuples); group fields take
    mappings or dotted keys; ``preset`` applies ``cls.PRESETS[name]`` first (see the module docstring).
    """
    values = _nest(dict(values or {}), what)
    presets: Mapping[str, Mapping[str, Any]] = getattr(cls, "PRESETS", {}) or {}
    if PRESET_KEY in values and PRESET_KEY not in {f.name for f in dataclasses.fields(cls)}:
        name = values.pop(PRESET_KEY)
        if name not in presets:
            raise ConfigError(f"{what}: unknown preset {name!r}; valid presets: {sorted(presets) or 'none'}")
        base = _nest(dict(presets[name]), what)
        for key, value in values.items():  # explicit keys override the preset (groups merge)
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}
            else:
                base[key] = value
        values = base
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        hint = f"; presets: {sorted(presets)} (key {PRESET_KEY!r})" if presets else ""
        raise ConfigError(f"{what}: unknown option(s) {unknown}; valid options: {sorted(fields) or 'none'}{hint}")
    for k, v in list(values.items()):
        group = group_class(fields[k])
        if group is not None and isinstance(v, Mapping):
            values[k] = config_from_dict(group, v, f"{what}: {k}")
        elif group is not None and not isinstance(v, group):
            raise ConfigError(f"{what}: {k} is an option group; give it as a mapping or as {k}.<option>=value")
        elif isinstance(v, list) and isinstance(fields[k].default, tuple):
            values[k] = tuple(v)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as a plain dict; groups as nested dicts (the form :func:`config_from_dict` reads back)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = config_to_dict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
    return out


def config_class(cls: type, root: type, base: type) -> type | None:
    """The config class of ``cls``, a subclass of ``root`` (``Attack`` / ``Defense``), read from the
    type parameter it subclasses with — ``class GC(Attack[GCConfig])`` gives ``GCConfig``, the one
    declaration that also types ``self.config`` for mypy. Called from ``root.__init_subclass__``.

    A subclass that gives no parameter inherits its parent's config class; one whose parameter is a
    type variable (``class ArtDefense(Defense[AC])``) stays generic and gets ``None`` (its own
    subclasses give the parameter). Raises :class:`TypeError` at class creation when the class
    body sets ``Config`` itself, when the parameter is not a subclass of ``base``, or when no
    class on the way up from ``cls`` gives a concrete parameter (``class X(Attack)``).
    """
    if "Config" in cls.__dict__:
        raise TypeError(f"{cls.__qualname__}: the config class comes from the type parameter "
                        f"({root.__name__}[{base.__name__} subclass]); remove `Config = ...` from the class body")
    params = [typing.get_args(b) for b in cls.__dict__.get("__orig_bases__", ())
              if isinstance(typing.get_origin(b), type) and issubclass(typing.get_origin(b), root)]
    if not params:  # a plain subclass: its parent's config class
        inherited: type | None = getattr(cls, "Config", None)
        if inherited is None:
            raise TypeError(f"{cls.__qualname__}: subclass {root.__name__}[XConfig] (XConfig a "
                            f"{base.__name__} subclass), not a {root.__name__} left generic")
        return inherited
    (arg,) = params[0]
    if isinstance(arg, TypeVar):
        return None
    if not (isinstance(arg, type) and issubclass(arg, base)):
        raise TypeError(f"{cls.__qualname__}: the type parameter of {root.__name__}[...] must be a "
                        f"{base.__name__} subclass, got {arg!r}")
    return arg
