"""Attacks: one module per attack, module name == registry key."""

from .base import ATTACKS, Attack, AttackConfig, build_attack, register_attack
from . import label_flip  # noqa: F401  (registers)
from . import unlearnable  # noqa: F401

__all__ = ["ATTACKS", "Attack", "AttackConfig", "build_attack", "register_attack"]
