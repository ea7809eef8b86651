"""Poisons beside their source points, with perturbation magnitudes, for inputs of any shape.

* images — (C, H, W) inputs with C in {1, 3} and H, W > 1, and (H, W) inputs drawn as one grey
  channel — one column per poison: its source image, the poison, and |poison − source|;
* anything else (tabular (d,), toy points (1, 1, 2), many-channel tensors, ...) — one row per
  poison: the source's and the poison's feature values over the (flattened) feature index, and
  the difference poison − source.

Figures are drawn on their own :class:`matplotlib.figure.Figure` (see
:func:`poisonlab.reporting.plots.new_figure`): pyplot's state and backend are never touched, so
these are safe to call from a notebook. The numbers come from
:func:`poisonlab.data.perturbation.perturbation_stats`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.bounds import Bounds
from ..data.perturbation import perturbation_stats
from ..data.types import Dataset, PoisonSet
from ..figures import new_figure, save_figure

#: feature vectors up to this length are drawn with markers / as bars
_FEW_FEATURES = 48


def is_image_shape(shape: Sequence[int]) -> bool:
    """True for one input of shape (C, H, W) with C in {1, 3}, or (H, W), with H, W > 1."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        return shape[0] in (1, 3) and shape[1] > 1 and shape[2] > 1
    return len(shape) == 2 and shape[0] > 1 and shape[1] > 1


def display_range(bounds: Bounds | None, *data: torch.Tensor) -> tuple[float, float]:
    """Scalar (lo, hi) to draw values with: each side from ``bounds`` where it is finite, else
    from the data (the min / max of ``data``); never an empty range."""
    lo = hi = math.nan
    if bounds is not None:
        lo, hi = float(bounds.lower.min()), float(bounds.upper.max())
    vals = [t.detach().float() for t in data if t is not None and t.numel()]
    if not math.isfinite(lo):
        lo = min((float(t.min()) for t in vals), default=0.0)
    if not math.isfinite(hi):
        hi = max((float(t.max()) for t in vals), default=1.0)
    if not (hi > lo):
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def draw_image(ax: Any, x: torch.Tensor, lo: float, hi: float) -> None:
    """``x`` (C, H, W) with C in {1, 3}, or (H, W), mapped from [lo, hi] onto the colour scale."""
    u = ((x.detach().cpu().float() - lo) / (hi - lo)).clamp(0.0, 1.0)
    if u.ndim == 2:
        u = u[None]
    if u.shape[0] == 1:
        ax.imshow(u[0].cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(u.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")


def draw_features(ax: Any, series: Sequence[tuple[torch.Tensor, str, str]]) -> None:
    """Feature values over the (flattened) feature index: one line per ``(values, label, colour)``."""
    for values, label, colour in series:
        v = values.detach().cpu().float().flatten().numpy()
        ax.plot(range(len(v)), v, marker="o" if len(v) <= _FEW_FEATURES else None, ms=3, lw=1.0, color=colour, label=label)
    ax.grid(alpha=0.3)


def draw_difference(ax: Any, delta: torch.Tensor) -> None:
    """poison − source over the feature index (bars for few features, a line otherwise)."""
    d = delta.detach().cpu().float().flatten().numpy()
    if len(d) <= _FEW_FEATURES:
        ax.bar(range(len(d)), d, width=0.8, color="C3")
    else:
        ax.plot(range(len(d)), d, lw=0.8, color="C3")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.grid(alpha=0.3)


def scale_note(bounds: Bounds | None, image: bool) -> str:
    """What scale the perturbation numbers are on, for a caption."""
    if bounds is None:
        return "data scale"
    if image and bounds.is_unit:
        return "pixel scale 0-1"
    return f"data scale, bounds {bounds.describe()}"


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def poison_grid(path: str | Path, poisons: PoisonSet, train: Dataset, max_items: int = 8, title: str = "") -> dict[str, float]:
    """Save a PNG of the first ``max_items`` poisons beside their source points in ``train``.

    Images: row 1 source images, row 2 poisons, row 3 |poison − source| (colour scales from
    ``train.bounds`` where finite, else from the data). Other inputs: per poison, the source's and
    the poison's feature values and their difference. The caption gives the perturbation on the
    data's scale. Nothing is written when there are no poisons.

    Returns :func:`~poisonlab.data.perturbation.perturbation_stats` (max and mean absolute
    element-wise perturbation over all poisons with a source).
    """
    stats = perturbation_stats(poisons, train)
    n = min(max_items, len(poisons))
    if n == 0:
        return stats
    shown = poisons.x[:n].detach().cpu()
    src = [int(i) for i in poisons.source[:n]]
    sources = [train.x[i].detach().cpu() if i >= 0 else None for i in src]
    source_labels = [f"src y={int(train.y[i])}" if i >= 0 else "no source" for i in src]
    image = is_image_shape(shown.shape[1:])
    bounds = train.bounds
    fig = (_image_grid if image else _feature_grid)(shown, poisons.y[:n].cpu(), sources, source_labels, bounds)
    fig.suptitle(
        (title + "\n" if title else "")
        + f"perturbation |poison − source|: max {stats['max_perturbation']:.3g}, "
        f"mean {stats['mean_perturbation']:.3g} ({scale_note(bounds, image)})",
        fontsize=8,
    )
    save_figure(fig, path, dpi=110)
    return stats


def _image_grid(shown: torch.Tensor, labels: torch.Tensor, sources: list, source_labels: list[str], bounds: Bounds):
    n = len(shown)
    lo, hi = display_range(bounds, shown, *[s for s in sources if s is not None])
    fig, axes = new_figure(3, n, figsize=(1.4 * n + 0.6, 4.6), squeeze=False)
    for j in range(n):
        s = sources[j]
        delta = (shown[j] - s).abs() if s is not None else None
        cells = [
            (s, lo, hi, source_labels[j]),
            (shown[j], lo, hi, f"poison y={int(labels[j])}"),
            (delta, 0.0, hi - lo, f"|Δ|max {float(delta.max()):.3g}" if delta is not None else "|Δ| —"),
        ]
        for i, (img, vlo, vhi, label) in enumerate(cells):
            ax = axes[i][j]
            _bare(ax)
            ax.set_title(label, fontsize=7)
            if img is not None:
                draw_image(ax, img, vlo, vhi)
    return fig


def _feature_grid(shown: torch.Tensor, labels: torch.Tensor, sources: list, source_labels: list[str], bounds: Bounds):
    n = len(shown)
    fig, axes = new_figure(n, 2, figsize=(10.0, 1.7 * n + 0.9), squeeze=False, sharex=True)
    d = int(shown[0].numel())
    for j in range(n):
        s = sources[j]
        left, right = axes[j]
        series = ([(s, "source", "C0")] if s is not None else []) + [(shown[j], "poison", "C3")]
        draw_features(left, series)
        left.set_title(f"poison {j}: y={int(labels[j])} ({source_labels[j]})", fontsize=7)
        left.tick_params(labelsize=6)
        if s is not None:
            delta = shown[j] - s
            draw_difference(right, delta)
            right.set_title(f"poison − source (max |Δ| {float(delta.abs().max()):.3g})", fontsize=7)
        else:
            right.set_axis_off()
            right.set_title("no source", fontsize=7)
        right.tick_params(labelsize=6)
        if j == 0:
            left.legend(fontsize=6, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel(f"feature index (of {d}" + (f", input shape {tuple(shown.shape[1:])})" if shown.ndim > 2 else ")"), fontsize=7)
    return fig
