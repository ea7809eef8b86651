"""The defend stage of the protocol (thesis §2.6.6): score D_tr ∪ D_p, filter, retrain, measure.

Runs after stage 3 when ``RunConfig.defense`` is set. The defender sees the poisoned training set
(without the mask), the victim spec and seed, the model already retrained on D_tr ∪ D_p (so score
functions that need "the victim trained on D" do not train it again) and the clean held-out split
D_v as its trusted reference set. Because the poison mask *is* known to the protocol, the scores
are judged as a detector: precision and recall of the removed set, ROC-AUC of the scores.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from torch import nn

from ..artifacts import load_poisons, load_state, save_model, write_atomic, write_json
from ..data.types import Dataset, PoisonedDataset
from ..defenses import Defense, build_defense
from ..seeding import torch_generator
from ..training import Victim, accuracy
from .config import RunConfig
from .prepare import prepare


def defense_from_config(cfg: RunConfig) -> Defense | None:
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
    clean_accuracy: float,
    *,
    seed: int,
    out: Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Score, filter, retrain on the kept points; return the result keys (and save artifacts to ``out``).

    Keys: ``defense``, ``defense_options``, ``defended_accuracy``, ``defended_drop`` (acc1 − acc3),
    ``detection`` {precision, recall, roc_auc, n_removed, n_poison_removed}, ``defense_info``,
    ``defense_seconds``.
    """
    t0 = time.perf_counter()
    log(f"[+] defense: {defense.name} scoring {len(mixed)} points, removing fraction {defense.config.fraction:g}"
        if defense.removes else f"[+] defense: {defense.name} (training-time, nothing removed)")
    generator = torch_generator(seed, "defense")
    scored = defense.score(mixed, victim, generator=generator, model=poisoned_model, reference=reference, progress=progress)
    outcome = defense.defend(mixed, victim, scored, generator=generator, progress=progress)
    acc3 = accuracy(outcome.model, test)
    detection = detection_metrics(mixed.is_poison, outcome.scores, outcome.keep)
    log(f"      defended test accuracy = {acc3:.2f} %; removed {detection['n_removed']} "
        f"({detection['n_poison_removed']} poisons), ROC-AUC {detection['roc_auc']}")
    record: dict[str, Any] = {
        "defense": defense.name,
        "defense_options": defense.options(),
        "defended_accuracy": acc3,
        "defended_drop": clean_accuracy - acc3,
        "detection": detection,
        "defense_info": dict(outcome.info),
        "defense_seconds": time.perf_counter() - t0,
    }
    if out is not None:
        buf = io.BytesIO()
        np.savez_compressed(buf, scores=outcome.scores.cpu().numpy(), is_poison=mixed.is_poison.cpu().numpy(),
                            keep=outcome.keep.cpu().numpy())
        write_atomic(out / "defense_scores.npz", buf.getvalue())
        save_model(out / "victim_defended.safetensors", outcome.model, {"stage": "defense", "defense": defense.name})
    return record


def defend_saved_run(
    run_dir: str | Path,
    defense: Defense,
    *,
    out: Path | None = None,
    prepared: Any | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Judge the poisons of a finished run by ``defense`` without re-running its stages.

    Re-loads the run's config, the deterministic split, its poisons and its clean / poisoned victim
    weights (safetensors), then runs :func:`run_defense`. One attack, crafted and retrained once,
    is so judged by many defenses (``bench/defenses_mnist.py``). ``prepared``: the run's
    :func:`~poisonlab.protocol.runner.prepare` result, to load the dataset once for many defenses.
    """
    run_dir = Path(run_dir)
    stored = json.loads((run_dir / "result.json").read_text())
    cfg = RunConfig.from_dict({**stored["config"], "defense": None, "defense_options": {}})  # the record's recipe read back
    prep = prepared if prepared is not None else prepare(cfg)
    mixed = PoisonedDataset.mix(prep.data.train, load_poisons(run_dir / stored["artifacts"]["poisons"]), cfg.injection)
    victim = Victim(prep.spec, cfg.seed, load_state(run_dir / stored["artifacts"]["clean_model"]))
    poisoned = prep.spec.build(cfg.seed)
    poisoned.load_state_dict(load_state(run_dir / stored["artifacts"]["poisoned_model"]))
    record = run_defense(defense, mixed, victim, poisoned.eval(), prep.data.val, prep.bundle.test,
                         stored["clean_accuracy"], seed=cfg.seed, out=out, progress=progress, log=log)
    if out is not None:
        write_json(out / "defense.json", {**record, "run": str(run_dir), "accuracy_drop": stored["accuracy_drop"]})
    return record
