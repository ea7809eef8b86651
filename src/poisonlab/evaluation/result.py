"""What an evaluation found: :class:`Evaluation`, built from the rows of its ``results.jsonl``.

Blocks (the report's sections, in order): the headline (the worst case — the lowest poisoned
accuracy over the attacks, per seed, then mean ± std — and the worst case after the best
defense), the attacks (one row per attack: poisoned accuracy, drop and attack seconds, mean ± std
over the seeds; what was shortened, skipped or does not apply, with the reason), the defenses
(against the two most damaging attacks: defended accuracy, precision / recall / ROC-AUC,
seconds), the theory (τ, τ_box, τ_gauge of the GradPC target, per seed) and the settings that
rerun it. ``to_markdown()``, ``to_json()``, ``to_html(path)`` render the same numbers.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._version import __version__
from ..artifacts import json_default, write_atomic
from ..data.types import ExperimentData
from ..protocol.results import RunResult
from ..reporting.grids import is_image_shape
from ..reporting.report import Stat
from ..sweeps import run_id
from .cells import AttackCell, DefenseCell, TheoryCell
from .html import render_html
from .markdown import render_markdown
from .plan import Decision
from .references import Reference
from .summary import summary_stat as _stat

#: points of a stored ROC curve (thinned evenly beyond that)
ROC_POINTS = 200


@dataclass
class AttackSummary:
    """One attack over the seeds. ``action``: ``"run"`` or ``"shorten"`` (with ``reason``)."""

    name: str
    attack: str
    options: dict[str, Any]
    action: str
    reason: str
    seeds: list[int] = field(default_factory=list)
    clean_accuracy: list[float] = field(default_factory=list)
    poisoned_accuracy: list[float] = field(default_factory=list)
    accuracy_drop: list[float] = field(default_factory=list)
    attack_seconds: list[float] = field(default_factory=list)
    n_poison: int | None = None
    failed: dict[int, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"poisoned_accuracy": _stat(self.poisoned_accuracy), "accuracy_drop": _stat(self.accuracy_drop),
                "attack_seconds": _stat(self.attack_seconds)}


@dataclass
class DefenseSummary:
    """One defense against one attack's poisons over the seeds (``roc``: seed -> (fpr, tpr))."""

    defense: str
    attack: str
    seeds: list[int] = field(default_factory=list)
    poisoned_accuracy: list[float] = field(default_factory=list)
    defended_accuracy: list[float] = field(default_factory=list)
    precision: list[float | None] = field(default_factory=list)
    recall: list[float | None] = field(default_factory=list)
    roc_auc: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    roc: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {k: _stat([v for v in getattr(self, k) if v is not None])
                for k in ("defended_accuracy", "precision", "recall", "roc_auc", "seconds")}


@dataclass
class WorstCase:
    """The lowest accuracy over ``candidates`` per seed (``per_seed``: seed -> (accuracy, attack)),
    its mean ± std over the seeds, and the attack that is worst on most seeds."""

    per_seed: dict[int, tuple[float, str]]
    mean: float | None
    std: float | None
    attack: str | None
    defense: str | None = None

    @staticmethod
    def of(accuracy: Mapping[str, Mapping[int, float]], defense: str | None = None) -> "WorstCase":
        """``accuracy``: attack -> seed -> accuracy (%)."""
        seeds = sorted({s for per in accuracy.values() for s in per})
        per_seed = {}
        for s in seeds:
            acc, name = min((per[s], a) for a, per in accuracy.items() if s in per)
            per_seed[s] = (acc, name)
        st = Stat.of(v for v, _ in per_seed.values())
        counts = Counter(name for _, name in per_seed.values())
        attack = min(counts, key=lambda a: (-counts[a], sum(accuracy[a].values()) / len(accuracy[a]), a)) if counts else None
        return WorstCase(per_seed, None if st.n == 0 else st.mean, None if st.n == 0 else st.std, attack, defense)


@dataclass
class Evaluation:
    """The result of :func:`poisonlab.evaluate` (see the module docstring for the blocks).

    Attributes:
        settings: everything needed to rerun it (data, victim and recipe, fraction, seeds, the
            attacks and defenses with their options, budget, backend, versions, the command).
        attacks: one :class:`AttackSummary` per attack that ran (fully or shortened).
        decisions: every plan decision (run / shorten / skip / not applicable) with its reason.
        clean_accuracy: seed -> clean test accuracy (%).
        worst_case: the headline: lowest poisoned accuracy over the attacks, per seed, mean ± std.
        defenses: one :class:`DefenseSummary` per (defense, attack) pair.
        worst_after_defense: for the best defense (highest mean worst case over the attacks it was
            run against), that worst case.
        theory: seed -> the :func:`poisonlab.threshold` report of the GradPC target.
        reference: the reference numbers (``--reference``), label -> cells.
        reference_source: where they come from.
        grids: attack -> PNG bytes (base64) of its first seed's poisons beside their sources (image data).
    """

    settings: dict[str, Any]
    attacks: list[AttackSummary]
    decisions: list[Decision]
    clean_accuracy: dict[int, float]
    worst_case: WorstCase
    defenses: list[DefenseSummary]
    worst_after_defense: WorstCase | None
    theory: dict[int, dict[str, Any]]
    reference: dict[str, dict[str, float]] | None = None
    reference_source: str | None = None
    grids: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ renderings
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("grids")
        d["decisions"] = [x.to_dict() for x in self.decisions]
        d["attacks"] = [{**asdict(a), "summary": a.summary()} for a in self.attacks]
        d["defenses"] = [{**{k: v for k, v in asdict(x).items() if k != "roc"}, "summary": x.summary()} for x in self.defenses]
        d["clean_accuracy_summary"] = _stat(list(self.clean_accuracy.values()))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=json_default)

    def to_markdown(self) -> str:
        return render_markdown(self)

    def to_html(self, path: str | Path | None = None) -> str:
        """The self-contained HTML report (figures embedded, no external resource); written to
        ``path`` when given. Returns the HTML."""
        text = render_html(self)
        if path is not None:
            write_atomic(path, text.encode())
        return text

    def write(self, directory: str | Path) -> None:
        """``report.md``, ``report.json`` and ``report.html`` into ``directory``."""
        d = Path(directory)
        write_atomic(d / "report.md", self.to_markdown().encode())
        write_atomic(d / "report.json", self.to_json().encode())
        self.to_html(d / "report.html")


def _roc(path: Path) -> tuple[list[float], list[float]] | None:
    if not path.is_file():
        return None
    from sklearn.metrics import roc_curve

    with np.load(path, allow_pickle=False) as z:
        truth, scores = z["is_poison"].astype(bool), z["scores"].astype(np.float64)
    if truth.all() or not truth.any():
        return None
    fpr, tpr, _ = roc_curve(truth, scores)
    if len(fpr) > ROC_POINTS:
        idx = np.unique(np.linspace(0, len(fpr) - 1, ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return [float(v) for v in fpr], [float(v) for v in tpr]


def build_evaluation(settings: dict[str, Any], decisions: list[Decision], attack_cells: list[AttackCell],
                     attack_rows: Mapping[str, dict[str, Any]], theory_cells: list[TheoryCell],
                     defense_cells: list[DefenseCell], defense_rows: Mapping[str, dict[str, Any]], directory: Path,
                     reference: Reference | None, data: ExperimentData) -> Evaluation:
    """Gather the rows of the cells into an :class:`Evaluation` (the per-seed numbers as recorded)."""
    import torch

    plan = {d.subject: d for d in decisions if d.kind == "attack"}
    results: dict[str, AttackSummary] = {}
    clean: dict[int, float] = {}
    grids: dict[str, str] = {}
    image = is_image_shape(data.input_shape)
    for c in attack_cells:
        d = plan[c.name]
        r = results.setdefault(c.name, AttackSummary(c.name, c.attack, c.options, d.action, d.reason))
        row = attack_rows.get(run_id(c))
        if row is None or row["status"] != "ok":
            r.failed[c.seed] = row["error"] if row else "not run"
            continue
        o = RunResult.from_dict(row["result"])
        r.seeds.append(c.seed)
        r.clean_accuracy.append(o.clean_accuracy)
        r.poisoned_accuracy.append(o.poisoned_accuracy)
        r.accuracy_drop.append(o.accuracy_drop)
        r.attack_seconds.append(o.attack_seconds)
        r.n_poison = o.n_poison
        clean.setdefault(c.seed, o.clean_accuracy)
        png = directory / "runs" / run_id(c) / "poisons.png"
        if image and c.name not in grids and png.is_file():
            grids[c.name] = base64.b64encode(png.read_bytes()).decode()
    attacks = list(results.values())
    worst = WorstCase.of({a.name: dict(zip(a.seeds, a.poisoned_accuracy)) for a in attacks if a.seeds})

    pairs: dict[tuple[str, str], DefenseSummary] = {}
    for dc in defense_cells:
        x = pairs.setdefault((dc.defense, dc.attack_name), DefenseSummary(dc.defense, dc.attack_name))
        row = defense_rows.get(run_id(dc))
        if row is None or row["status"] != "ok":
            x.failed[dc.seed] = row["error"] if row else "not run"
            continue
        res = row["result"]
        x.seeds.append(dc.seed)
        x.poisoned_accuracy.append(float(res["poisoned_accuracy"]))
        x.defended_accuracy.append(float(res["defended_accuracy"]))
        x.precision.append(res["detection"]["precision"])
        x.recall.append(res["detection"]["recall"])
        x.roc_auc.append(res["detection"]["roc_auc"])
        x.seconds.append(float(res["defense_seconds"]))
        roc = _roc(directory / "runs" / run_id(dc) / "defense_scores.npz")
        if roc is not None:
            x.roc[dc.seed] = roc
    defenses = list(pairs.values())
    after = None
    by_defense: dict[str, dict[str, dict[int, float]]] = {}
    for x in defenses:
        if x.seeds:
            by_defense.setdefault(x.defense, {})[x.attack] = dict(zip(x.seeds, x.defended_accuracy))
    if by_defense:
        cases = [WorstCase.of(acc, defense=name) for name, acc in by_defense.items()]
        after = max((w for w in cases if w.mean is not None), key=lambda w: (w.mean, w.defense), default=None)

    theory: dict[int, dict[str, Any]] = {}
    for tc in theory_cells:
        row = attack_rows.get(run_id(tc))
        theory[tc.seed] = ({k: v for k, v in row["result"].items() if not isinstance(v, (list, dict)) or k == "target_info"}
                          if row is not None and row["status"] == "ok"
                          else {"error": row["error"] if row else "not run"})
    settings = {**settings, "poisonlab_version": __version__, "torch_version": torch.__version__,
                "n_train": len(data.train), "input_shape": list(data.input_shape), "num_classes": data.num_classes}
    return Evaluation(settings, attacks, decisions, clean, worst, defenses, after, theory,
                      {k: dict(v) for k, v in reference.cells.items()} if reference else None,
                      reference.described_for(settings["dataset"], settings["fraction"]) if reference else None, grids)
