"""``poisonlab evaluate``: what a poisoned fraction can cost a model — the worst case over the
attack suite, the defenses against it, the theory's thresholds — as one call and one report.

Cells run through the sweep machinery (:mod:`poisonlab.sweeps`): one resumable ``results.jsonl``,
local processes or Ray. See ``docs/guide/evaluate.md``.
"""

from .references import REFERENCE_NAMES, TABLE_2_2_ATTACKS, thesis_numbers
from .result import AttackSummary, DefenseSummary, Evaluation, WorstCase
from .run import evaluate

__all__ = ["REFERENCE_NAMES", "TABLE_2_2_ATTACKS", "AttackSummary", "DefenseSummary", "Evaluation", "WorstCase", "evaluate",
           "thesis_numbers"]
