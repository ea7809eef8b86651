"""Attack / Defense are generic in their config type: ``class X(Attack[XConfig])`` types ``self.config``
as an ``XConfig`` for mypy, while the registry builds from ``Config``. mypy cannot see that the two
agree, so this checks it for every registered class: ``Config`` must be the type parameter or a
subclass of it, or ``self.config`` is typed as something it is not."""

import typing

import pytest

from poisonlab.attacks import ATTACKS
from poisonlab.attacks.base import Attack, AttackConfig
from poisonlab.defenses import DEFENSES
from poisonlab.defenses.base import Defense, DefenseConfig


def config_parameter(cls: type) -> type | None:
    """The concrete type argument nearest ``cls`` in its MRO (``Attack[GCConfig]`` → GCConfig), or None
    where the class and its bases leave the parameter open."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            args = [a for a in typing.get_args(base) if isinstance(a, type)]
            if args:
                return args[0]
    return None


CLASSES = [("attack", n, ATTACKS.get(n)) for n in ATTACKS.names()] + [("defense", n, DEFENSES.get(n)) for n in DEFENSES.names()]


@pytest.mark.parametrize(("kind", "name", "cls"), CLASSES, ids=[f"{k}:{n}" for k, n, _ in CLASSES])
def test_config_is_the_type_parameter(kind, name, cls):
    param = config_parameter(cls)
    assert param is not None, f"{kind} {name!r}: subclass {kind.title()}[ItsConfig], not the bare base"
    assert issubclass(cls.Config, param), f"{kind} {name!r}: Config = {cls.Config.__name__} but the base says {param.__name__}"


def test_a_mismatch_is_seen():
    class A(AttackConfig):
        pass

    class B(AttackConfig):
        pass

    class Wrong(Attack[A]):
        Config = B

    class RightDefense(Defense[DefenseConfig]):
        Config = DefenseConfig

    assert config_parameter(Wrong) is A and not issubclass(Wrong.Config, A)
    assert config_parameter(RightDefense) is DefenseConfig
