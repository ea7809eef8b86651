"""Explicit name -> object registries. Duplicates raise unless ``replace=True``; unknown names list the valid ones.

A registry may also be filled from outside the package: by a decorator called in user code
(:meth:`Registry.register`), or by the Python entry points of an installed distribution in the
registry's ``group`` (e.g. ``poisonlab.attacks``), loaded on the first lookup that needs them. A
plugin that fails to load or to register raises :class:`~poisonlab.errors.PluginError` naming the
entry point.
"""

from __future__ import annotations

import sys
import types
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import PluginError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small explicit registry (no subclass discovery, no ``eval``).

    >>> R = Registry("widget")
    >>> @R.register("a")
    ... def make_a(): ...
    >>> R.names()
    ['a']

    Registering a taken name raises, unless ``replace=True`` (e.g. a notebook cell that registers
    a model and is run again):

    >>> R.add("a", make_a, replace=True)
    >>> R.get("a") is make_a
    True

    Args:
        kind: what the registry holds, for messages (``"attack"``: "unknown attack 'x'; valid attacks: ...").
        group: the entry-point group whose entry points register here (``"poisonlab.attacks"``); each
            entry point's name is the registered name and its object (``pkg.module:Class``) the
            component, or a module that registers the name itself when imported. ``None``: none.
        accept: ``accept(name, obj) -> stored``: checks that ``obj`` is this registry's kind of object
            (raising :class:`TypeError` if not) and returns what is stored (e.g. the class with its
            ``name`` set); ``None`` stores ``obj`` as it is.
    """

    def __init__(self, kind: str, *, group: str | None = None,
                 accept: Callable[[str, Any], T] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._accept = accept
        self._items: dict[str, T] = {}
        self._loading = False
        self._scanned: tuple[str, ...] | None = None  # sys.path at the last scan of the entry points

    def register(self, name: str, *, replace: bool = False) -> Callable[[Any], Any]:
        """Decorator form of :meth:`add`; returns the object unchanged."""

        def decorator(obj: Any) -> Any:
            self.add(name, obj, replace=replace)
            return obj

        return decorator

    def add(self, name: str, obj: Any, *, replace: bool = False) -> None:
        """Register ``obj`` under ``name``. A name already taken raises :class:`ValueError`
        unless ``replace=True``, which puts ``obj`` in place of the old entry."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self._items[name] = self._accept(name, obj) if self._accept is not None else obj

    def remove(self, name: str) -> None:
        """Unregister ``name`` (an unknown name raises :class:`~poisonlab.errors.UnknownNameError`)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        if name not in self._items:
            self.load_plugins(again=True)
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items and isinstance(name, str):
            self.load_plugins(again=True)
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    # ------------------------------------------------------------------ entry points
    def entry_points(self) -> list[metadata.EntryPoint]:
        """The entry points of :attr:`group` that the installed distributions (on ``sys.path`` now) declare."""
        if self.group is None:
            return []
        return list(metadata.entry_points(group=self.group))

    def load_plugins(self, *, again: bool = False) -> None:
        """Register every entry point of :attr:`group` not registered yet. Called by a lookup that
        misses (``again``: the installed distributions are read anew) and by :meth:`names` (read once
        per ``sys.path``), so an installed plugin is there on first use; a plugin that fails raises
        :class:`~poisonlab.errors.PluginError` naming its entry point (again at each lookup, until fixed)."""
        if self.group is None or self._loading:  # a plugin module that looks names up while it loads
            return
        if not again and self._scanned == tuple(sys.path):
            return
        self._loading = True
        try:
            self._scanned = None  # until every entry point has registered
            for ep in self.entry_points():
                if ep.name not in self._items or not self._from(ep, self._items[ep.name]):
                    self._load(ep)
            self._scanned = tuple(sys.path)
        finally:
            self._loading = False

    def _where(self, ep: metadata.EntryPoint) -> str:
        dist = getattr(ep, "dist", None)
        by = f", distribution {dist.name} {dist.version}" if dist is not None else ""
        return f"plugin entry point {ep.name} = {ep.value} (group {self.group}{by})"

    @staticmethod
    def _from(ep: metadata.EntryPoint, stored: Any) -> bool:
        """Whether ``stored`` is what ``ep`` names: the same module and object (not a built-in that took the name)."""
        obj = getattr(stored, "__wrapped__", stored)
        return (getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)) == (ep.module, ep.attr)

    def _load(self, ep: metadata.EntryPoint) -> None:
        where = self._where(ep)
        try:
            obj = ep.load()
        except Exception as exc:  # the plugin's own bug or a missing dependency: say whose
            raise PluginError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
        if isinstance(obj, types.ModuleType):  # a module that registers its components when imported
            if ep.name not in self._items:
                raise PluginError(f"{where}: importing {obj.__name__} registered no {self.kind} named {ep.name!r}")
            return
        stored = self._items.get(ep.name)
        if stored is not None and (stored is obj or getattr(stored, "__wrapped__", None) is obj):
            return  # the module's own decorator registered it under the entry point's name
        if stored is not None:
            raise PluginError(f"{where}: {self.kind} {ep.name!r} is already registered (by "
                              f"{getattr(stored, '__module__', '?')}); give the entry point another name")
        others = [n for n, v in self._items.items() if v is obj or getattr(v, "__wrapped__", None) is obj]
        if others:
            raise PluginError(f"{where}: {ep.attr} registers itself as {self.kind} {others[0]!r}; "
                              f"name the entry point {others[0]!r} too")
        try:
            self.add(ep.name, obj)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{where}: {exc}") from exc
