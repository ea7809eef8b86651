"""Explicit name -> object registries. Duplicates raise unless ``replace=True``; unknown names list the valid ones."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import UnknownNameError

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
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the object unchanged."""

        def decorator(obj: T) -> T:
            self.add(name, obj, replace=replace)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, replace: bool = False) -> None:
        """Register ``obj`` under ``name``. A name already taken raises :class:`ValueError`
        unless ``replace=True``, which puts ``obj`` in place of the old entry."""
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"invalid {self.kind} name {name!r}")
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to replace it")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
