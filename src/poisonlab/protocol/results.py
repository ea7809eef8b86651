"""The typed results of the protocol's calls, one per call.

* :class:`RunResult` — a whole run (:func:`poisonlab.run`, ``poisonlab run``, a sweep's run);
* :class:`DefenseResult` — a defense judged on a poisoned set (:func:`poisonlab.defend`, the
  defend stage of a run);
* :class:`ThresholdResult` — the reachability report of a target (:func:`poisonlab.threshold`,
  ``poisonlab threshold``).

Each is frozen, with a typed field per value, and ``to_dict()`` gives its JSON record: for a run the
mapping ``result.json`` holds, key for key and in the same order. ``from_dict`` reads such a record
back (and :meth:`RunResult.load` a run's ``result.json``), so a record written earlier is read with
the same type; a mapping with missing or unknown keys is a :class:`~poisonlab.errors.DataError`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..data.types import PoisonSet
from ..errors import DataError
from ..storage import write_atomic

#: a run record's keys, in ``result.json``'s order (``accuracy_drop`` is derived from the accuracies)
RUN_KEYS = ("dataset", "model", "attack", "fraction", "injection", "seed", "n_train", "n_val", "n_test", "n_poison",
            "clean_accuracy", "poisoned_accuracy", "accuracy_drop", "attack_seconds", "total_seconds",
            "max_perturbation", "mean_perturbation", "attack_info", "poisonlab_version", "torch_version",
            "python_version", "device", "environment", "cache", "config", "artifacts")
#: the keys the defend stage adds to a run record (all of them, or none when no defense ran)
DEFENSE_KEYS = ("defense", "defense_options", "defended_accuracy", "defended_drop", "detection", "defense_info",
                "defense_seconds")
#: the keys of a defense's ``detection`` block
DETECTION_KEYS = ("precision", "recall", "roc_auc", "n_removed", "n_poison_removed")
#: a threshold report's keys, in order; :data:`FRACTION_KEYS` follow when a fraction was checked
THRESHOLD_KEYS = ("target_test_accuracy", "clean_test_accuracy", "target_info", "inner_W_G", "tau", "n_clean",
                  "min_poisons", "condition", "clean_grad_norm_at_target", "tau_box", "tau_gauge", "gauge_label_mix",
                  "box_not_applicable", "min_poisons_box", "fraction")
FRACTION_KEYS = ("n_poisons_at_fraction", "fraction_passes", "fraction_passes_box", "fraction_passes_gauge")


def _check_keys(record: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...], what: str) -> None:
    if not isinstance(record, Mapping):
        raise DataError(f"a {what} record must be a mapping, got {type(record).__name__}")
    missing = [k for k in required if k not in record]
    unknown = [k for k in record if k not in required and k not in optional]
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown else [])
        raise DataError(f"not a {what} record: {'; '.join(parts)}")


# ---------------------------------------------------------------------------- defense
@dataclass(frozen=True, kw_only=True)
class DefenseResult:
    """What a defense did to a poisoned training set D_tr ∪ D_p (thesis §2.6.6).

    The detection fields judge the removed set against the poison mask, which the protocol knows
    and the defender does not.

    Attributes:
        defense: the defense's name.
        options: the defense's options (its config, defaults filled in).
        poisoned_accuracy: test accuracy (%) of the victim trained on D_tr ∪ D_p (what the defense was given).
        defended_accuracy: test accuracy (%) of the victim retrained on the kept points.
        precision: of the removed set (None when nothing was removed).
        recall: fraction of the poisons removed (None without poisons).
        roc_auc: of the scores against the poison mask (None when one class is missing).
        n_removed: points removed.
        n_poison_removed: poisons among them.
        info: the defense's diagnostics.
        seconds: wall time of the defense (scoring, filtering, retraining on the kept points).
        clean_accuracy: test accuracy (%) of the victim trained on D_tr alone, when the caller measured
            it (a run does; :func:`poisonlab.defend` trains no clean victim): the base of :attr:`defended_drop`.
        scores: (N,) suspicion per point of D_tr ∪ D_p (higher = more suspicious; the first |D_tr|
            entries are the clean points); None for a result read from a record (a run keeps them in
            its ``defense_scores.npz``).
        keep: (N,) bool, the points the defense keeps (None as for ``scores``).
        is_poison: (N,) bool, the truth (None as for ``scores``).
        model: the victim retrained on the kept points (None as for ``scores``; a run writes it to
            its ``victim_defended.safetensors``).
    """

    defense: str
    options: dict[str, Any]
    poisoned_accuracy: float
    defended_accuracy: float
    precision: float | None
    recall: float | None
    roc_auc: float | None
    n_removed: int
    n_poison_removed: int
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    clean_accuracy: float | None = None
    scores: torch.Tensor | None = field(default=None, compare=False, repr=False)
    keep: torch.Tensor | None = field(default=None, compare=False, repr=False)
    is_poison: torch.Tensor | None = field(default=None, compare=False, repr=False)
    model: nn.Module | None = field(default=None, compare=False, repr=False)

    @property
    def defended_drop(self) -> float | None:
        """clean − defended accuracy in points (None without :attr:`clean_accuracy`)."""
        return None if self.clean_accuracy is None else self.clean_accuracy - self.defended_accuracy

    @property
    def detection(self) -> dict[str, Any]:
        """The detection metrics as the record's ``detection`` block."""
        return {k: getattr(self, k) for k in DETECTION_KEYS}

    def save_scores(self, path: str | Path) -> Path:
        """Write ``scores``, ``is_poison`` and ``keep`` to an npz (a run's ``defense_scores.npz``)."""
        if self.scores is None or self.keep is None or self.is_poison is None:
            raise DataError(f"this {self.defense} result was read from a record: it holds no per-point scores "
                            "(a run keeps them in its defense_scores.npz)")
        buf = io.BytesIO()
        np.savez_compressed(buf, scores=self.scores.cpu().numpy(), is_poison=self.is_poison.cpu().numpy(),
                            keep=self.keep.cpu().numpy())
        write_atomic(path, buf.getvalue())
        return Path(path)

    def to_dict(self) -> dict[str, Any]:
        """The defense's keys of a run record (:data:`DEFENSE_KEYS`, as ``result.json`` holds them)."""
        return {"defense": self.defense, "defense_options": dict(self.options), "defended_accuracy": self.defended_accuracy,
                "defended_drop": self.defended_drop, "detection": self.detection, "defense_info": dict(self.info),
                "defense_seconds": self.seconds}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], *, poisoned_accuracy: float,
                  clean_accuracy: float | None = None) -> DefenseResult:
        """Read :meth:`to_dict`'s keys back; the accuracies without the defense come from the run."""
        _check_keys(record, DEFENSE_KEYS, (), "defense")
        _check_keys(record["detection"], DETECTION_KEYS, (), "defense detection")
        return cls(defense=record["defense"], options=dict(record["defense_options"]), poisoned_accuracy=poisoned_accuracy,
                   defended_accuracy=record["defended_accuracy"], **{k: record["detection"][k] for k in DETECTION_KEYS},
                   info=dict(record["defense_info"]), seconds=record["defense_seconds"], clean_accuracy=clean_accuracy)


# ---------------------------------------------------------------------------- run
@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One run of the protocol (thesis §2.5.2): pretrain → attack → test (→ defend).

    Attributes:
        dataset: the data's name.
        model: the victim's architecture (a registered name, or the factory's name).
        attack: the attack's name.
        fraction: the poison fraction ε_d of |D_tr|.
        injection: ``"add"`` (D_tr ∪ D_p) or ``"replace"`` (each poison in place of its source).
        seed: the run's seed.
        n_train: |D_tr|.
        n_val: |D_v|.
        n_test: the test set's size.
        n_poison: poisons crafted (``poison_count(fraction, n_train)``).
        clean_accuracy: test accuracy (%) of the victim trained on D_tr (``acc1``).
        poisoned_accuracy: test accuracy (%) of the victim retrained on the poisoned set (``acc2``).
        attack_seconds: wall time of the attack stage.
        total_seconds: wall time of the whole run.
        max_perturbation: max |poison − source| over the poisons with a source (NaN without any).
        mean_perturbation: its mean.
        attack_info: the attack's diagnostics (its own and its :meth:`~poisonlab.attacks.Attack.assess`).
        poisonlab_version: the version that ran.
        torch_version: torch's version.
        python_version: Python's version.
        device: the device the victim was trained on.
        environment: what produced the run (:func:`~poisonlab.provenance.run_environment`).
        cache: per cached stage, ``"hit"``, ``"miss"`` or None (no cache).
        config: the run's settings (its config, ``attack_options``, the recipe, the bounds, ``out``).
        artifacts: the files written, relative to ``config["out"]`` (empty when nothing was written:
            the protocol writes no file, its caller does, :func:`~poisonlab.protocol.run_files.write_run`).
        defended: the defend stage's result, None when no defense ran.
        poisons: the poison set (None for a result read from a record: it is in ``poisons.npz``).
        clean_model: the victim trained on D_tr (None as for ``poisons``).
        poisoned_model: the victim retrained on the poisoned set (None as for ``poisons``).
    """

    dataset: str
    model: str
    attack: str
    fraction: float
    injection: str
    seed: int
    n_train: int
    n_val: int
    n_test: int
    n_poison: int
    clean_accuracy: float
    poisoned_accuracy: float
    attack_seconds: float
    total_seconds: float
    max_perturbation: float
    mean_perturbation: float
    attack_info: dict[str, Any]
    poisonlab_version: str
    torch_version: str
    python_version: str
    device: str
    environment: dict[str, Any]
    cache: dict[str, Any]
    config: dict[str, Any]
    artifacts: dict[str, str]
    defended: DefenseResult | None = None
    poisons: PoisonSet | None = field(default=None, compare=False, repr=False)
    clean_model: nn.Module | None = field(default=None, compare=False, repr=False)
    poisoned_model: nn.Module | None = field(default=None, compare=False, repr=False)

    @property
    def accuracy_drop(self) -> float:
        """clean − poisoned accuracy, in percentage points."""
        return self.clean_accuracy - self.poisoned_accuracy

    @property
    def attack_options(self) -> dict[str, Any]:
        """The attack's options, defaults filled in (``config["attack_options"]``)."""
        return dict(self.config.get("attack_options") or {})

    @property
    def out(self) -> str | None:
        """The directory the artifacts were written to (None: nothing written)."""
        return self.config.get("out")

    def to_dict(self) -> dict[str, Any]:
        """The record ``result.json`` holds (and a sweep's ``results.jsonl`` row): :data:`RUN_KEYS`
        in order, then :data:`DEFENSE_KEYS` when a defense ran."""
        out = {k: getattr(self, k) for k in RUN_KEYS}
        for k in ("attack_info", "environment", "cache", "config", "artifacts"):
            out[k] = dict(out[k])
        return {**out, **(self.defended.to_dict() if self.defended is not None else {})}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RunResult:
        """Read a run record (``result.json``'s mapping) back: ``from_dict(r).to_dict() == r``."""
        defended = isinstance(record, Mapping) and any(k in record for k in DEFENSE_KEYS)
        _check_keys(record, RUN_KEYS + (DEFENSE_KEYS if defended else ()), (), "run")
        values = {k: record[k] for k in RUN_KEYS if k != "accuracy_drop"}
        dfn = (DefenseResult.from_dict({k: record[k] for k in DEFENSE_KEYS}, poisoned_accuracy=record["poisoned_accuracy"],
                                       clean_accuracy=record["clean_accuracy"]) if defended else None)
        return cls(**values, defended=dfn)

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        """Read a run's ``result.json`` (``path``: the file or the run's directory)."""
        p = Path(path)
        if p.is_dir():
            p = p / "result.json"
        try:
            record = json.loads(p.read_text())
        except FileNotFoundError:
            raise DataError(f"no run record at {p}") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the run record {p}: {exc}") from None
        return cls.from_dict(record)


# ---------------------------------------------------------------------------- threshold
@dataclass(frozen=True, kw_only=True)
class ThresholdResult:
    """How much poison reaching a target model needs — necessary conditions, no poisons crafted (thesis ch. 3).

    Attributes:
        target_test_accuracy: test accuracy (%) of the target.
        clean_test_accuracy: test accuracy (%) of the clean victim the target was made from (None
            for a target given as a model, a state or a file).
        target_info: how the target was made (the maker's diagnostics, or its source).
        inner_W_G: ⟨W, G(μ)⟩ = E⟨h, p − y⟩ at the target (eq. 3.6's numerator).
        tau: the cross-entropy threshold τ, poisons per clean point (the last layer of a network);
            below it no poison set makes the target a stationary point of retraining.
        n_clean: |D_tr|.
        min_poisons: the fewest poisons τ allows (None when τ is infinite).
        condition: what kind of condition τ is.
        clean_grad_norm_at_target: ‖g(μ)‖, the clean loss gradient's norm at the target.
        tau_box: the box threshold τ_box (linear softmax targets with finite bounds; else None).
        tau_gauge: the exact box gauge τ_gauge ≥ τ_box (None as for ``tau_box``).
        gauge_label_mix: the label mix of the gauge's poison plan (None as for ``tau_box``).
        box_not_applicable: why the box quantities are None (None when they apply).
        min_poisons_box: the fewest box-bounded poisons τ_gauge allows (None as for ``tau_gauge``).
        fraction: the poison fraction checked (None: none was).
        n_poisons_at_fraction: ``poison_count(fraction, n_clean)`` (None without ``fraction``).
        fraction_passes: whether ``fraction`` passes τ (False: *no* poison set of that size reaches
            the target; None without ``fraction``).
        fraction_passes_box: whether it passes τ_box (None without ``fraction`` or τ_box).
        fraction_passes_gauge: whether it passes τ_gauge (None without ``fraction`` or τ_gauge).
    """

    target_test_accuracy: float
    clean_test_accuracy: float | None
    target_info: dict[str, Any]
    inner_W_G: float
    tau: float
    n_clean: int
    min_poisons: int | None
    condition: str
    clean_grad_norm_at_target: float
    tau_box: float | None
    tau_gauge: float | None
    gauge_label_mix: list[float] | None
    box_not_applicable: str | None
    min_poisons_box: int | None
    fraction: float | None
    n_poisons_at_fraction: int | None = None
    fraction_passes: bool | None = None
    fraction_passes_box: bool | None = None
    fraction_passes_gauge: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as a mapping: :data:`THRESHOLD_KEYS`, then :data:`FRACTION_KEYS` when a
        fraction was checked (what ``poisonlab threshold --json`` prints)."""
        keys = THRESHOLD_KEYS + (FRACTION_KEYS if self.fraction is not None else ())
        out = {k: getattr(self, k) for k in keys}
        out["target_info"] = dict(self.target_info)
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ThresholdResult:
        """Read :meth:`to_dict`'s mapping back: ``from_dict(r).to_dict() == r``."""
        checked = isinstance(record, Mapping) and record.get("fraction") is not None
        _check_keys(record, THRESHOLD_KEYS + (FRACTION_KEYS if checked else ()), (), "threshold")
        return cls(**{k: record[k] for k in THRESHOLD_KEYS + (FRACTION_KEYS if checked else ())})


__all__ = ["DEFENSE_KEYS", "DETECTION_KEYS", "FRACTION_KEYS", "RUN_KEYS", "THRESHOLD_KEYS", "DefenseResult", "RunResult",
           "ThresholdResult"]
