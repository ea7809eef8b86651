"""Experiment spec -> run (pretrain, attack, retrain, measure) -> result record."""

from .artifacts import load_poisons, load_state, save_model, save_poisons, write_atomic, write_json
from .config import RunConfig
from .runner import prepare, pretrain_victim, run_protocol

__all__ = ["RunConfig", "load_poisons", "load_state", "prepare", "pretrain_victim", "run_protocol", "save_model",
           "save_poisons", "write_atomic", "write_json"]
