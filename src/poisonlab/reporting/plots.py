"""Figures from a sweep's records (see :func:`poisonlab.reporting.report.flatten`). PNG via matplotlib (Agg).

Every figure is drawn on its own :class:`matplotlib.figure.Figure` with an Agg canvas
(:func:`new_figure`) and written by :func:`save_figure`; nothing here selects a backend or uses
pyplot, so calling these from a notebook leaves the notebook's figures and backend alone.

* :func:`plot_drop_vs_fraction` — accuracy drop vs poison fraction ε_d, one panel per
  dataset/model, one line per attack, mean ± std over seeds (thesis Figure 2.4).
* :func:`plot_transition` — per dataset/model/attack: the drop curve, the *observed transition*
  (smallest ε_d whose mean drop reaches ``level`` points, linearly interpolated) and, where an
  attack recorded one (``attack_info["threshold"]``, fraction units), the predicted threshold τ
  (thesis ch. 3, Figure 3.1); plus a τ-vs-observed scatter when thresholds exist.
* :func:`plot_poison_grids` — a few poisons of each attack at its largest ε_d, read from the
  runs' ``poisons.npz`` (images drawn as images, other inputs as feature-value plots).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..figures import new_figure, save_figure
from .report import Stat

__all__ = ["new_figure", "observed_transition", "plot_drop_vs_fraction", "plot_poison_grids", "plot_transition",
           "save_figure"]

def _curves(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[tuple[float, Stat, Stat]]]]:
    """(dataset, model) -> attack -> [(fraction, drop stat, threshold stat)] sorted by fraction."""
    acc: dict[tuple[str, str], dict[str, dict[float, list[dict[str, Any]]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in records:
        acc[(r["dataset"], r["model"])][r["attack"]][float(r["fraction"])].append(r)
    out: dict[tuple[str, str], dict[str, list[tuple[float, Stat, Stat]]]] = {}
    for dm, attacks in sorted(acc.items()):
        out[dm] = {a: [(f, Stat.of(x["accuracy_drop"] for x in rs), Stat.of(x["threshold"] for x in rs))
                       for f, rs in sorted(pts.items())] for a, pts in sorted(attacks.items())}
    return out


def _grid(n: int, w: float = 4.2, h: float = 3.4):
    cols = max(1, min(3, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = new_figure(rows, cols, figsize=(max(w * cols, 6.4), h * rows + 0.4), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_drop_vs_fraction(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    curves = _curves(records)
    fig, axes = _grid(len(curves))
    for ax, ((dataset, model), attacks) in zip(axes, curves.items()):
        for attack, pts in attacks.items():
            f = np.array([p[0] for p in pts]) * 100
            m = np.array([p[1].mean for p in pts])
            s = np.array([p[1].std for p in pts])
            ax.errorbar(f, m, yerr=s, marker="o", ms=4, capsize=3, label=attack)
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{dataset} / {model}")
        ax.set_xlabel("poison fraction ε_d (% of |D_tr|)")
        ax.set_ylabel("accuracy drop (percentage points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Accuracy drop vs poison fraction (mean ± std over seeds)", fontsize=10)
    return save_figure(fig, path)


def observed_transition(fractions: Sequence[float], drops: Sequence[float], level: float) -> float | None:
    """Smallest ε_d where the (mean) drop reaches ``level``, interpolated linearly between grid points.

    ``None`` when no grid point reaches it; the first fraction when it already does.
    """
    for i, (f, d) in enumerate(zip(fractions, drops)):
        if d >= level:
            if i == 0:
                return float(f)
            f0, d0 = fractions[i - 1], drops[i - 1]
            return float(f0 + (level - d0) * (f - f0) / (d - d0))
    return None


def plot_transition(records: Sequence[dict[str, Any]], path: str | Path, level: float = 1.0) -> tuple[Path, list[dict[str, Any]]]:
    """The transition figure and, per dataset/model/attack, ``{observed, threshold}`` in fraction units."""
    panels = [(dm, a, pts) for dm, attacks in _curves(records).items() for a, pts in attacks.items()]
    summary = []
    with_tau = [p for p in panels if any(x[2].n for x in p[2])]
    fig, axes = _grid(len(panels) + (1 if with_tau else 0))
    for ax, ((dataset, model), attack, pts) in zip(axes, panels):
        f = [p[0] for p in pts]
        d = [p[1].mean for p in pts]
        taus = [p[2].mean for p in pts if p[2].n]
        tau = float(np.mean(taus)) if taus else None
        obs = observed_transition(f, d, level)
        summary.append({"dataset": dataset, "model": model, "attack": attack, "observed": obs, "threshold": tau})
        ax.errorbar(np.array(f) * 100, d, yerr=[p[1].std for p in pts], marker="o", ms=4, capsize=3, label="drop")
        ax.axhline(level, color="grey", ls=":", lw=1, label=f"level {level:g} percentage points")
        if obs is not None:
            ax.axvline(obs * 100, color="C1", ls="--", label=f"observed ε_d = {obs * 100:.2f} %")
        if tau is not None:
            ax.axvline(tau * 100, color="C2", ls="-", label=f"threshold τ = {tau * 100:.2f} %")
        ax.set_title(f"{dataset} / {model} / {attack}", fontsize=9)
        ax.set_xlabel("poison fraction ε_d (% of |D_tr|)")
        ax.set_ylabel("accuracy drop (percentage points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if with_tau:
        ax = axes[-1]
        pairs = [(s["threshold"], s["observed"]) for s in summary if s["threshold"] is not None and s["observed"] is not None]
        if pairs:
            x, y = np.array(pairs).T * 100
            ax.scatter(x, y, zorder=3)
            hi = max(x.max(), y.max()) * 1.1 or 1.0
            ax.plot([0, hi], [0, hi], color="grey", ls=":", label="observed = threshold")
            ax.legend(fontsize=7)
        ax.set_title("threshold vs observed transition")
        ax.set_xlabel("predicted threshold τ (% of |D_tr|)")
        ax.set_ylabel("observed transition ε_d (% of |D_tr|)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Transition: where the mean accuracy drop reaches {level:g} percentage points", fontsize=10)
    return save_figure(fig, path), summary


def plot_poison_grids(records: Sequence[dict[str, Any]], root: str | Path, path: str | Path, per_row: int = 8) -> Path | None:
    """One row per dataset/model/attack: ``per_row`` poisons (with their labels) at the largest ε_d, lowest seed."""
    from ..artifacts import load_poisons

    chosen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in records:
        k = (r["dataset"], r["model"], r["attack"])
        best = chosen.get(k)
        if best is None or (r["fraction"], -r["seed"]) > (best["fraction"], -best["seed"]):
            chosen[k] = r
    rows = []
    for k, r in sorted(chosen.items()):
        p = Path(root) / r["run_dir"] / "poisons.npz"
        if p.is_file():
            ps = load_poisons(p)
            if len(ps):
                rows.append((k, r, ps))
    if not rows:
        return None
    from .grids import draw_features, draw_image, is_image_shape

    n = min(per_row, max(len(ps) for _, _, ps in rows))
    fig, axes = new_figure(len(rows), n, figsize=(1.3 * n + 2.2, 1.5 * len(rows) + 0.6), squeeze=False)
    scales = set()
    for i, ((dataset, model, attack), r, ps) in enumerate(rows):
        shown = ps.x[:n].detach().cpu().float()
        image = is_image_shape(shown.shape[1:])
        if image:  # no bounds in the run files: the pixel box when the poisons lie in it, else their range
            lo, hi = float(shown.min()), float(shown.max())
            lo, hi = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 else (lo, hi if hi > lo else lo + 1.0)
            scales.add("pixel scale 0–1" if (lo, hi) == (0.0, 1.0) else "colour scale: each row's value range")
        else:
            scales.add("feature values over the feature index")
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(ps):
                ax.set_axis_off()
                continue
            if image:
                draw_image(ax, shown[j], lo, hi)
            else:
                draw_features(ax, [(shown[j], "poison", "C3")])
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"y={int(ps.y[j])}", fontsize=7)
        axes[i][0].set_ylabel(f"{attack}\n{dataset}/{model}\nε_d={r['fraction']:g}", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"Poisons ({'; '.join(sorted(scales))}; y = poison label)", fontsize=9)
    return save_figure(fig, path)
