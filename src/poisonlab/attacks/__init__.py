"""Attacks: one module per attack, module name == registry key."""

from . import (  # noqa: F401,E401  (register target "gradpc" and attack "gc")  # noqa: F401  (registers; gradient_matching needs gc)
    back_gradient,
    feature_targeted,  # noqa: F401  (needs gc)
    gc,
    gradient_matching,
    gradpc,
    i_min_max,
    label_flip,  # noqa: F401  (registers)
    metapoison,
    min_max,
    reachable_target,  # noqa: F401  (registers target "reachable")
    tgda,
    unlearnable,  # noqa: F401
)
from .base import ATTACKS, Attack, AttackConfig, build_attack, register_attack

__all__ = ["ATTACKS", "Attack", "AttackConfig", "build_attack", "register_attack"]
