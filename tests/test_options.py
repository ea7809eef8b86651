"""Config dataclasses from dicts: unknown keys rejected, option groups (nested or dotted), presets."""

import dataclasses
from typing import ClassVar

import pytest

from poisonlab.errors import ConfigError
from poisonlab.options import config_from_dict, config_to_dict


@dataclasses.dataclass(frozen=True, kw_only=True)
class Solver:
    iters: int = 10
    damping: float = 0.01


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    PRESETS: ClassVar[dict] = {"thesis": {"lr": 0.01, "solver.iters": 20}}
    lr: float = 0.1
    sizes: tuple = (1, 2)
    solver: Solver = dataclasses.field(default_factory=Solver)


def test_groups_take_nested_mappings_and_dotted_keys_and_keep_other_defaults():
    a = config_from_dict(Outer, {"solver": {"iters": 5}}, "t")
    b = config_from_dict(Outer, {"solver.iters": 5}, "t")
    assert a == b and a.solver == Solver(iters=5, damping=0.01) and a.lr == 0.1
    assert config_from_dict(Outer, {"sizes": [3, 4]}, "t").sizes == (3, 4)  # YAML lists -> tuples
    assert config_to_dict(a) == {"lr": 0.1, "sizes": (1, 2), "solver": {"iters": 5, "damping": 0.01}}
    assert config_from_dict(Outer, config_to_dict(a), "t") == a  # round trip


@pytest.mark.parametrize("values, match", [
    ({"nope": 1}, r"unknown option\(s\) \['nope'\]"),
    ({"solver.nope": 1}, r"t: solver: unknown option\(s\) \['nope'\]"),
    ({"solver": 3}, "option group"),
    ({"lr.x": 1, "lr": 2}, "both as a value and as a group"),
    ({"preset": "paper"}, "unknown preset 'paper'; valid presets: \\['thesis'\\]"),
])
def test_bad_keys_are_clear_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(Outer, values, "t")


def test_presets_apply_first_and_explicit_keys_override_them():
    p = config_from_dict(Outer, {"preset": "thesis"}, "t")
    assert p.lr == 0.01 and p.solver.iters == 20 and p.solver.damping == 0.01
    q = config_from_dict(Outer, {"preset": "thesis", "lr": 0.5, "solver.damping": 0.1}, "t")
    assert q.lr == 0.5 and q.solver == Solver(iters=20, damping=0.1)
