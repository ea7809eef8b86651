"""THE plugin protocol: one base for attacks, defenses, victim architectures and target makers.

A component is a class that holds only its configuration, a frozen dataclass:

- **config** from the type parameter: ``class MyAttack(Attack[MyConfig])`` declares the config
  class once; it types ``self.config`` and is what the registry builds from. ``MyAttack(steps=5)``
  and ``MyAttack(config=MyConfig(steps=5))`` are the same; unknown keys are a
  :class:`~poisonlab.errors.ConfigError` (:func:`~poisonlab.options.config_from_dict`).
- **check_supported**\\ (...): raises :class:`~poisonlab.errors.UnsupportedError`, saying why, when
  the component cannot work on this victim / data; called before any work. Each kind fixes its
  arguments (an attack's: the attacker's data and the victim).
- **registration**: each kind has one registry (:func:`component_registry`) and one decorator
  (``pl.register_attack``, ``pl.register_defense``, ``pl.register_victim``, ``pl.register_target``),
  and is also filled from the entry points of installed packages (groups ``poisonlab.attacks``,
  ``poisonlab.defenses``, ``poisonlab.victims``, ``poisonlab.targets``).
- **building**: ``REGISTRY.get(name)(**options)`` — the kind's ``build_*`` function.

The kinds: :class:`~poisonlab.attacks.base.Attack`, :class:`~poisonlab.defenses.base.Defense`,
:class:`~poisonlab.models.victims.Architecture`, :class:`~poisonlab.attacks.targets.TargetMaker`;
docs/guide/extending.md walks through adding one of each.
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar, Generic, Mapping, TypeVar, cast

from .options import config_class, config_from_dict, config_to_dict
from .registry import Registry

#: a component's config type: ``class GC(Attack[GCConfig])`` makes ``self.config`` a ``GCConfig``
C = TypeVar("C")


class Component(ABC, Generic[C]):
    """Base of every pluggable part. A kind's base class (``Attack``) sets ``kind`` and
    ``config_base`` (the class every config of that kind subclasses, ``AttackConfig``) in its own
    body; its subclasses give the config class as the type parameter (a subclass without a
    parameter inherits its parent's; ``class X(Attack)`` with no parameter anywhere is a TypeError)."""

    #: the kind, for messages ("attack", "defense", "model", "target")
    kind: ClassVar[str] = "component"
    #: the class every config of this kind subclasses (set by the kind's base class)
    config_base: ClassVar[type] = object
    #: the registered name (set by the registry)
    name: ClassVar[str] = ""
    #: one line for ``poisonlab list``
    summary: ClassVar[str] = ""
    #: the config class, derived from the type parameter (never set in a class body)
    Config: ClassVar[type]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        root = next(k for k in cls.__mro__ if "config_base" in vars(k))
        if root is cls:  # a kind's base class (Attack): generic, its subclasses give the parameter
            return
        config = config_class(cls, root, vars(root)["config_base"])
        if config is not None:  # None: a generic intermediate (``Defense[AC]``), its subclasses give it
            cls.Config = config

    def __init__(self, config: Any = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either a config object or keyword options, not both")
        what = f"{self.kind} {self.name!r}"
        built = config if config is not None else config_from_dict(self.Config, self._given(options, what), what)
        if not isinstance(built, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(built).__name__}")
        #: the instance's options (an instance of ``Config``, checked above)
        self.config: C = cast(C, built)

    @classmethod
    def _given(cls, options: Mapping[str, Any], what: str) -> Mapping[str, Any]:
        """The keyword options as the config reads them (a hook: victim architectures check their names)."""
        return options

    def options(self) -> dict[str, Any]:
        """The options as a plain dict (the form the constructor takes back)."""
        return config_to_dict(self.config)

    def check_supported(self, *args: Any, **kwargs: Any) -> None:  # noqa: B027 - an optional hook, not abstract
        """Raise :class:`~poisonlab.errors.UnsupportedError` (saying why) when this component cannot
        work on the given victim / data; called before any work. Default: supported."""


def component_registry(kind: str, base: type, group: str) -> Registry[Any]:
    """The registry of one kind: it holds subclasses of ``base`` (anything else is a TypeError),
    sets each one's ``name`` to the name it is registered under, and loads the entry points of
    ``group``. The decorator of the kind is its :meth:`~poisonlab.registry.Registry.register`."""

    def accept(name: str, obj: Any) -> type:
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise TypeError(f"{kind} {name!r} must be a subclass of poisonlab.{base.__name__}, got {obj!r}")
        obj.name = name  # type: ignore[attr-defined]  # a Component subclass (checked above)
        return obj

    return Registry(kind, group=group, accept=accept)
