"""Sweeps: grids of protocol runs, local and Ray execution, resumable ``results.jsonl``.

Imports point downward: sweeps use the protocol runner, the protocol never imports sweeps.
"""

from .backends import InlineBackend, LocalBackend, RayBackend, make_backend
from .execute import COMPARABLE, execute_run
from .grid import Grid, Resources, Run, expand, load_grid, run_id
from .results import ResultsLog, SweepLockedError, load_rows
from .sweep import SweepPlan, SweepSummary, plan, run_sweep
from .tracking import MlflowLogger

__all__ = ["COMPARABLE", "Grid", "InlineBackend", "LocalBackend", "MlflowLogger", "RayBackend", "Resources", "ResultsLog", "Run",
           "SweepLockedError", "SweepPlan", "SweepSummary", "execute_run", "expand", "load_grid", "load_rows", "make_backend", "plan",
           "run_id", "run_sweep"]
