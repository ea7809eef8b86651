"""Attack / Defense are generic in their config type, and the type parameter is the one declaration
of it: ``class X(Attack[XConfig])`` types ``self.config`` as an ``XConfig`` for mypy and, read at
class creation (:func:`poisonlab.options.config_class`), sets ``X.Config``, the class the registry
builds from. These tests check the derivation on every registered class (against the parameter read
here independently, from the MRO) and that every wrong way to declare it fails at class creation."""

import typing
from typing import TypeVar

import pytest
import torch
from extras import param

from poisonlab.attacks import ATTACKS
from poisonlab.attacks.base import Attack, AttackConfig
from poisonlab.defenses import DEFENSES
from poisonlab.defenses.base import Defense, DefenseConfig


def config_parameter(cls: type) -> type | None:
    """The concrete type argument nearest ``cls`` in its MRO (``Attack[GCConfig]`` → GCConfig), or None
    where the class and its bases leave the parameter open."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            args = [a for a in typing.get_args(base) if isinstance(a, type)]
            if args:
                return args[0]
    return None


CLASSES = [param(n, "attack", n, ATTACKS.get(n), id=f"attack:{n}") for n in ATTACKS.names()] + \
    [param(n, "defense", n, DEFENSES.get(n), id=f"defense:{n}") for n in DEFENSES.names()]


@pytest.mark.parametrize(("kind", "name", "cls"), CLASSES)
def test_config_is_the_type_parameter(kind, name, cls):
    param = config_parameter(cls)
    assert param is not None, f"{kind} {name!r}: subclass {kind.title()}[ItsConfig], not the bare base"
    assert cls.Config is param, f"{kind} {name!r}: Config = {cls.Config.__name__} but the base says {param.__name__}"
    assert "Config" not in cls.__dict__ or cls.__dict__["Config"] is param  # set by the base, not written by hand
    assert isinstance(cls().config, param)


class _Cfg(AttackConfig):
    pass


class _Other(AttackConfig):
    pass


def test_the_parameter_sets_config_and_builds_it():
    class A(Attack[_Cfg]):
        def _craft(self, data, victim, n_poison, *, generator, progress, cache):
            raise NotImplementedError

    class D(Defense[DefenseConfig]):
        def _score(self, data, victim, *, generator, model, reference, progress):
            return torch.zeros(len(data))

    assert A.Config is _Cfg and type(A().config) is _Cfg
    assert D.Config is DefenseConfig and D(fraction=0.1).config.fraction == 0.1
    with pytest.raises(TypeError, match="_Cfg"):
        A(config=_Other())  # a config object of another class is still refused


def test_a_plain_subclass_inherits_the_config():
    class A(Attack[_Cfg]):
        pass

    class B(A):
        pass

    assert B.Config is _Cfg


def test_a_generic_intermediate_leaves_it_to_its_subclasses():
    T = TypeVar("T", bound=AttackConfig)

    class Family(Attack[T]):
        pass

    class Member(Family[_Other]):
        pass

    assert "Config" not in Family.__dict__ and Member.Config is _Other
    with pytest.raises(TypeError, match="left generic"):
        class Orphan(Family):  # no parameter anywhere on the way up
            pass


def test_a_bare_subclass_fails_at_class_creation():
    with pytest.raises(TypeError, match=r"Attack\[XConfig\]"):
        class A(Attack):
            pass
    with pytest.raises(TypeError, match=r"Defense\[XConfig\]"):
        class D(Defense):
            pass


def test_an_explicit_config_fails_at_class_creation():
    with pytest.raises(TypeError, match="remove `Config = ...`"):
        class A(Attack[_Cfg]):
            Config = _Cfg
    with pytest.raises(TypeError, match="remove `Config = ...`"):
        class D(Defense):
            Config = DefenseConfig


def test_a_parameter_that_is_not_a_config_fails():
    with pytest.raises(TypeError, match="AttackConfig subclass"):
        class A(Attack[DefenseConfig]):  # type: ignore[type-var]
            pass
    with pytest.raises(TypeError, match="DefenseConfig subclass"):
        class D(Defense[int]):  # type: ignore[type-var]
            pass
