"""Defenses: one module per defense, module name == registry key.

Each scores every training point (higher = more suspicious); the one shared filter
(:func:`filter_scores`) removes ``poison_count(fraction, N)`` of them and the victim is retrained.
"""

from . import art_activation, art_spectral, influence, knn, loss, maxup, sever, slab, spectral, sphere  # noqa: F401  (registers)  # noqa: F401  (registers; ART imported only when built)
from .base import DEFENSES, Defense, DefenseConfig, DefenseOutcome, DefenseScores, build_defense, filter_scores, register_defense

__all__ = ["DEFENSES", "Defense", "DefenseConfig", "DefenseOutcome", "DefenseScores", "build_defense", "filter_scores",
           "register_defense"]
