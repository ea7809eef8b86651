"""Figures that leave pyplot alone: every figure poisonlab draws is a
:class:`matplotlib.figure.Figure` on its own Agg canvas (:func:`new_figure`), written by the one
writer :func:`save_figure`. No backend is selected and no figure is registered with pyplot, so a
notebook's backend and open figures are untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, *,
               squeeze: bool = True, **subplots: Any) -> tuple[Figure, Any]:
    """A fresh :class:`~matplotlib.figure.Figure` on its own Agg canvas and its axes.

    Like ``pyplot.subplots(nrows, ncols, figsize=..., squeeze=..., **subplots)`` (``sharex``,
    ``sharey``, ``gridspec_kw``, ...) but the figure is unknown to pyplot: no backend is selected
    and no figure is registered or closed, so the caller's own figures and backend (a notebook's
    inline backend, say) are left alone. Write it with :func:`save_figure`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplots)
    return fig, axes


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """THE figure writer: lay out ``fig``, write it to ``path`` (parents created); returns the path.

    The format follows the suffix (PNG for ``.png``). A figure from :func:`new_figure` is unknown
    to pyplot, so there is nothing to close (it is freed with its last reference); a pyplot figure
    passed in stays open — it belongs to the caller.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
