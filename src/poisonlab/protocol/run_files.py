"""A run's files, written by whoever called the protocol — ``pl.run(out=...)``, ``poisonlab run``,
a sweep's run — and never by :func:`.runner.run_experiment` itself, which returns its poisons and
models in the :class:`~.results.RunResult` and writes nothing.

A run's folder: ``result.json`` (the record), ``poisons.npz``, ``poisons.png`` (a grid of the
first poisons beside their sources), the victims as safetensors (``victim_clean``,
``victim_poisoned``, and any model the attack made, e.g. ``target``), and with a defense
``defense_scores.npz`` and ``victim_defended.safetensors``. The record's ``artifacts`` names each
file relative to the folder.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..artifacts import save_model, save_poisons, save_state, write_json
from ..data.types import Dataset
from ..errors import DataError
from ..reporting.grids import poison_grid
from ..validation import check_output_dir
from .results import DefenseResult, RunResult

#: a run's files by their ``artifacts`` key
RUN_FILES = {"poisons": "poisons.npz", "poison_grid": "poisons.png", "clean_model": "victim_clean.safetensors",
             "poisoned_model": "victim_poisoned.safetensors"}
#: the defend stage's files by their ``artifacts`` key
DEFENSE_FILES = {"defense_scores": "defense_scores.npz", "defended_model": "victim_defended.safetensors"}


def write_defense(out: str | Path, result: DefenseResult) -> dict[str, str]:
    """Write a defense's per-point scores and defended victim to the folder ``out``; returns their
    ``artifacts`` entries. ``result`` must come from a defense that ran (a record holds neither)."""
    if result.model is None:
        raise DataError(f"this {result.defense} result was read from a record: it holds no defended victim to write")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    result.save_scores(folder / DEFENSE_FILES["defense_scores"])
    save_model(folder / DEFENSE_FILES["defended_model"], result.model, {"stage": "defense", "defense": result.defense})
    return dict(DEFENSE_FILES)


def write_run(out: str | Path, result: RunResult, train: Dataset) -> RunResult:
    """Write the files of a run that just ran (its poisons and models in memory) to the folder
    ``out`` and return the result with ``artifacts`` and ``config["out"]`` filled in, as
    ``result.json`` records it. ``train``: D_tr, the poisons' sources for the grid."""
    if result.poisons is None or result.clean_model is None or result.poisoned_model is None:
        raise DataError("this run result was read from a record: it holds no poisons or models to write")
    folder = check_output_dir(out, "out")
    folder.mkdir(parents=True, exist_ok=True)
    save_poisons(folder / RUN_FILES["poisons"], result.poisons)
    save_model(folder / RUN_FILES["clean_model"], result.clean_model, {"model": result.model, "stage": "pretrain"})
    save_model(folder / RUN_FILES["poisoned_model"], result.poisoned_model, {"model": result.model, "stage": "retrain"})
    states = {f"{name}_model": f"{name}.safetensors" for name in result.poisons.states}
    for name, state in result.poisons.states.items():  # e.g. the target model of a model-targeted attack
        save_state(folder / f"{name}.safetensors", state, {"model": result.model, "stage": f"attack:{name}"})
    poison_grid(folder / RUN_FILES["poison_grid"], result.poisons, train,
                title=f"{result.attack} on {result.dataset}/{result.model}")
    artifacts = {**RUN_FILES, **states}
    if result.defended is not None:
        artifacts.update(write_defense(folder, result.defended))
    written = replace(result, config={**result.config, "out": str(folder)}, artifacts=artifacts)
    write_json(folder / "result.json", written.to_dict())
    return written
