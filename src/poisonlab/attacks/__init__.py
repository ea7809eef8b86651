"""Attacks: one module per attack, module name == registry key."""

from .base import ATTACKS, Attack, AttackConfig, build_attack, register_attack
from . import label_flip  # noqa: F401  (registers)
from . import gradpc, gc  # noqa: F401,E401  (register target "gradpc" and attack "gc")
from . import back_gradient, metapoison, min_max, tgda, i_min_max, gradient_matching  # noqa: F401  (registers; gradient_matching needs gc)
from . import unlearnable  # noqa: F401
from . import feature_targeted  # noqa: F401  (needs gc)

__all__ = ["ATTACKS", "Attack", "AttackConfig", "build_attack", "register_attack"]
