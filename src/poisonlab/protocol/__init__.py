"""Experiment spec -> run (pretrain, attack, retrain, measure) -> result record."""

from ..artifacts import load_poisons, load_state, save_model, save_poisons, write_atomic, write_json
from .config import RunSpec
from .prepare import prepare
from .results import DefenseResult, RunResult, ThresholdResult
from .run_files import write_defense, write_run
from .runner import pretrain_victim, run_experiment, run_protocol, train_clean

__all__ = ["DefenseResult", "RunSpec", "RunResult", "ThresholdResult", "load_poisons", "load_state", "prepare",
           "pretrain_victim", "run_experiment", "run_protocol", "save_model", "save_poisons", "train_clean", "write_atomic",
           "write_defense", "write_json", "write_run"]
