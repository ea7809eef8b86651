"""Small formatting helpers shared by the evaluation's result and its renderings."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..reporting.report import Stat
from .references import LABELS


def summary_stat(values: Sequence[float]) -> dict[str, float | int | None]:
    """``{"mean", "std", "n"}`` of ``values`` (sample std; None when empty)."""
    s = Stat.of(values)
    return {"mean": None if s.n == 0 else s.mean, "std": None if s.n == 0 else s.std, "n": s.n}


def fmt(stat: Mapping[str, Any] | None, digits: int = 2) -> str:
    """``mean ± std`` of a :func:`summary_stat` summary (``–`` when empty; no ± for one value)."""
    if not stat or stat.get("n", 0) == 0 or stat.get("mean") is None or not math.isfinite(stat["mean"]):
        return "–"
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat["n"] > 1 else "")


def label(name: str) -> str:
    """The display name of a row (Table 2.2's names where it has one)."""
    return LABELS.get(name, name)
