"""The defend stage of the protocol (thesis §2.6.6): score D_tr ∪ D_p, filter, retrain, measure.

Runs after stage 3 when ``RunSpec.defense`` is set. The defender sees the poisoned training set
(without the mask), the victim spec and seed, the model already retrained on D_tr ∪ D_p (so score
functions that need "the victim trained on D" do not train it again) and the clean held-out split
D_v as its trusted reference set. Because the poison mask *is* known to the protocol, the scores
are judged as a detector: precision and recall of the removed set, ROC-AUC of the scores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from torch import nn

from ..artifacts import load_poisons, load_state, write_json
from ..data.types import Dataset, ExperimentData, PoisonedDataset
from ..defenses import Defense, build_defense
from ..seeding import torch_generator
from ..training import Victim, VictimSpec, accuracy
from .config import RunSpec
from .prepare import prepare
from .results import DefenseResult, RunResult
from .run_files import write_defense
from .run_log import Report, run_messages, silent


def defense_from_config(cfg: RunSpec) -> Defense | None:
    """The configured defense (options validated now, before any work), or None."""
    return build_defense(cfg.defense, cfg.defense_options) if cfg.defense else None


def detection_metrics(is_poison: torch.Tensor, scores: torch.Tensor, keep: torch.Tensor) -> dict[str, Any]:
    """Precision / recall of the removed set and ROC-AUC of the scores against the poison mask.

    ``precision`` is None when nothing was removed, ``recall`` when there are no poisons and
    ``roc_auc`` when the mask has a single class.
    """
    truth = is_poison.cpu().numpy().astype(bool)
    removed = (~keep).cpu().numpy().astype(bool)
    both = 0 < truth.sum() < len(truth)
    return {
        "precision": float(precision_score(truth, removed, zero_division=0)) if removed.any() else None,
        "recall": float(recall_score(truth, removed, zero_division=0)) if truth.any() else None,
        "roc_auc": float(roc_auc_score(truth, scores.cpu().numpy())) if both else None,
        "n_removed": int(removed.sum()),
        "n_poison_removed": int((removed & truth).sum()),
    }


def run_defense(
    defense: Defense,
    mixed: PoisonedDataset,
    victim: Victim,
    poisoned_model: nn.Module,
    reference: Dataset,
    test: Dataset,
    clean_accuracy: float | None = None,
    *,
    seed: int,
    poisoned_accuracy: float | None = None,
    progress: bool = False,
    report: Report = silent,
) -> DefenseResult:
    """THE defend stage: score, filter, retrain on the kept points, judge the removed set against
    the poison mask (:func:`detection_metrics`). The result holds the scores and the defended
    victim; it writes no file (:func:`~.run_files.write_defense` does) and prints nothing
    (``report`` receives its events, :mod:`.run_log`).

    ``clean_accuracy``: acc1 of the victim trained on D_tr, when the caller has it (the base of
    ``defended_drop``); ``poisoned_accuracy``: the test accuracy of ``poisoned_model``, measured here
    unless given. :func:`poisonlab.defend`, the protocol runner and :func:`defend_saved_run` all call it.
    """
    if poisoned_accuracy is None:
        poisoned_accuracy = accuracy(poisoned_model, test)
    t0 = time.perf_counter()
    report("defense", {"defense": defense.name, "removes": defense.removes, "n_points": len(mixed),
                       "fraction": defense.config.fraction})
    generator = torch_generator(seed, "defense")
    scored = defense.score(mixed, victim, generator=generator, model=poisoned_model, reference=reference, progress=progress)
    outcome = defense.defend(mixed, victim, scored, generator=generator, progress=progress)
    acc3 = accuracy(outcome.model, test)
    detection = detection_metrics(mixed.is_poison, outcome.scores, outcome.keep)
    report("defended", {"accuracy": acc3, **detection})
    result = DefenseResult(defense=defense.name, options=defense.options(), poisoned_accuracy=poisoned_accuracy,
                           defended_accuracy=acc3, **detection, info=dict(outcome.info), seconds=time.perf_counter() - t0,
                           clean_accuracy=clean_accuracy, scores=outcome.scores, keep=outcome.keep, is_poison=mixed.is_poison,
                           model=outcome.model)
    return result


def defend_saved_run(
    run_dir: str | Path,
    defense: Defense,
    *,
    out: Path | None = None,
    prepared: tuple[ExperimentData, VictimSpec] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> DefenseResult:
    """Judge the poisons of a finished run by ``defense`` without re-running its stages.

    Re-loads the run's config, the deterministic split, its poisons and its clean / poisoned victim
    weights (safetensors), then runs :func:`run_defense`. One attack, crafted and retrained once,
    is so judged by many defenses (``bench/defenses_mnist.py``). ``prepared``: the run's
    :func:`~poisonlab.protocol.prepare.prepare` result (data, spec), to load the dataset once for many defenses.
    With ``out``, ``defense.json`` holds the defense's record keys, ``run`` and its ``accuracy_drop``.
    """
    run_dir = Path(run_dir)
    run = RunResult.load(run_dir)
    cfg = RunSpec.from_dict({**run.config, "defense": None, "defense_options": {}})  # the record's recipe read back
    data, spec = prepared if prepared is not None else prepare(cfg)
    mixed = PoisonedDataset.mix(data.train, load_poisons(run_dir / run.artifacts["poisons"]), cfg.injection)
    victim = Victim(spec, cfg.seed, load_state(run_dir / run.artifacts["clean_model"]))
    poisoned = spec.build(cfg.seed)
    poisoned.load_state_dict(load_state(run_dir / run.artifacts["poisoned_model"]))
    result = run_defense(defense, mixed, victim, poisoned.eval(), data.val, data.test, run.clean_accuracy,
                         seed=cfg.seed, poisoned_accuracy=run.poisoned_accuracy, progress=progress,
                         report=run_messages(log))
    if out is not None:
        write_defense(out, result)
        write_json(out / "defense.json", {**result.to_dict(), "run": str(run_dir), "accuracy_drop": run.accuracy_drop})
    return result
