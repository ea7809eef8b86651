"""Reference numbers to print beside an evaluation: the thesis' Table 2.2 (MNIST, ε = 3 %).

``poisonlab evaluate --reference thesis-table-2.2`` adds a column with these numbers and, unless
``--attacks`` says otherwise, evaluates the table's attack suite with the options the thesis'
table was measured with (:data:`TABLE_2_2_ATTACKS`: label flip by the rule y ← 9 − y, GC aimed at
its GradPC target, and GC aimed at a *reachable* target). ``bench/table_2_2.py`` reads the same
table from here.

The numbers are an embedded copy of the table (accuracy %, drop in points, attack hours on the
thesis' GPU); :func:`thesis_numbers` parses them from the thesis text instead when given its path
(the test suite checks that both agree).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError

#: thesis Table 2.2, LR row (accuracy %, drop in points, attack hours); the copy used without the text
THESIS_LR: dict[str, dict[str, float]] = {
    "clean": {"accuracy": 92.35},
    "label_flip": {"accuracy": 90.83, "drop": 1.52, "hours": 0.0},
    "min_max": {"accuracy": 89.80, "drop": 2.55, "hours": 0.7},
    "i_min_max": {"accuracy": 89.56, "drop": 2.79, "hours": 19.0},
    "back_gradient": {"accuracy": 89.82, "drop": 2.53, "hours": 27.0},
    "tgda": {"accuracy": 89.56, "drop": 2.79, "drop_std": 0.07, "hours": 1.1},
}
#: thesis Table 2.2, NN row (the MLP 784-1000-1000)
THESIS_NN: dict[str, dict[str, float]] = {
    "clean": {"accuracy": 98.04},
    "label_flip": {"accuracy": 97.99, "drop": 0.05, "hours": 0.0},
    "min_max": {"accuracy": 98.07, "drop": -0.03, "hours": 13.0},
    "i_min_max": {"accuracy": 97.82, "drop": 0.22, "hours": 73.0},
    "back_gradient": {"accuracy": 97.67, "drop": 0.37, "hours": 239.0},
    "tgda": {"accuracy": 96.54, "drop": 1.50, "drop_std": 0.02, "hours": 15.0},
}
#: victim -> (the row's label in the thesis, the embedded row)
THESIS_ROWS: dict[str, tuple[str, dict[str, dict[str, float]]]] = {"lr": ("LR", THESIS_LR), "nn": ("NN", THESIS_NN)}
#: the table's columns in the thesis' order (the cells the text has numbers for)
THESIS_COLUMNS = ("label_flip", "min_max", "i_min_max", "back_gradient", "tgda")

#: Table 2.2's attack suite: row label -> (registered attack, options). ``gc_reachable`` is gc aimed
#: at the ``"reachable"`` target maker's target (τ_gauge ≤ 0.8·ε), with plan labels and 600 steps of 0.05
TABLE_2_2_ATTACKS: dict[str, tuple[str, dict[str, Any]]] = {
    "label_flip": ("label_flip", {"mode": "rule"}),
    "min_max": ("min_max", {}),
    "i_min_max": ("i_min_max", {}),
    "back_gradient": ("back_gradient", {}),
    "metapoison": ("metapoison", {}),
    "gradient_matching": ("gradient_matching", {}),
    "tgda": ("tgda", {}),
    "gc": ("gc", {"target": "gradpc"}),
    "gc_reachable": ("gc", {"target": "reachable", "init": "plan", "steps": 600, "lr": 0.05}),
}
#: display names of Table 2.2's rows
LABELS = {"clean": "Clean", "label_flip": "Label flip", "min_max": "Min-max", "i_min_max": "i-Min-max",
          "back_gradient": "BG", "metapoison": "MetaPoison", "gradient_matching": "Gradient matching",
          "tgda": "TGDA", "gc": "GC", "gc_reachable": "GC (reachable target)"}


@dataclass(frozen=True)
class Reference:
    """Published numbers for one victim: ``cells`` maps a row label (an attack, or ``"clean"``) to
    ``{"accuracy", "drop", "drop_std", "hours"}`` (each optional); ``attacks`` is the suite the
    numbers were measured with (label -> (attack, options)); ``dataset`` and ``fraction`` the
    setting they were measured in."""

    name: str
    source: str
    cells: Mapping[str, Mapping[str, float]]
    attacks: Mapping[str, tuple[str, dict[str, Any]]]
    dataset: str = "mnist"
    fraction: float = 0.03

    def described_for(self, dataset: str, fraction: float) -> str:
        """Where the numbers come from, and a warning when ``dataset`` / ``fraction`` (the
        evaluation's) are not the setting they were measured in."""
        if dataset == self.dataset and math.isclose(fraction, self.fraction):
            return self.source
        return (f"{self.source}; measured on {self.dataset} at ε = {self.fraction:g}, while this evaluation is "
                f"{dataset} at ε = {fraction:g}: the columns are not comparable cell by cell")


#: the names ``--reference`` accepts
REFERENCE_NAMES = ("thesis-table-2.2",)


def thesis_numbers(path: str | Path | None = None, model: str = "lr") -> tuple[dict[str, dict[str, float]], str]:
    """Table 2.2's row of ``model`` ("lr" or "nn"): parsed from the thesis text at ``path`` (Clean,
    Label Flip, Min-max, i-Min-max, BG, TGDA), or the embedded copy when ``path`` is None, absent,
    or its row does not parse. Returns (row, where it came from)."""
    if model not in THESIS_ROWS:
        raise ConfigError(f"Table 2.2 has rows for victims {sorted(THESIS_ROWS)}, not {model!r}")
    label, embedded = THESIS_ROWS[model]
    if path is None:
        return embedded, "thesis Table 2.2 (embedded copy)"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return embedded, "embedded copy (thesis text not found)"
    line = next((ln for ln in text.splitlines() if re.match(rf"^{label}\s+\d+\.\d+\s+\d+\.\d+/", ln)), None)
    if line is None:
        return embedded, f"embedded copy (no {label} row in the thesis text)"
    clean = float(line.split()[1])
    cells = re.findall(r"(\d+\.\d+)/\s*(-?\d+\.\d+)(.*?)(\d+(?:\.\d+)?)\s*hrs", line)
    if len(cells) != len(THESIS_COLUMNS):
        return embedded, f"embedded copy (the thesis' {label} row did not parse)"
    out: dict[str, dict[str, float]] = {"clean": {"accuracy": clean}}
    for name, (acc, drop, middle, hours) in zip(THESIS_COLUMNS, cells):
        out[name] = {"accuracy": float(acc), "drop": float(drop), "hours": float(hours)}
        std = re.search(r"(\d+)[:.](\d+)", middle)  # "± 0.07" comes out of the PDF as "� 0:07"
        if std:
            out[name]["drop_std"] = float(f"{std.group(1)}.{std.group(2)}")
    return out, f"{path} (Table 2.2, {label} row)"


def reference(name: str, model: str, path: str | Path | None = None) -> Reference:
    """The reference ``name`` (one of :data:`REFERENCE_NAMES`) for the victim ``model``."""
    if name not in REFERENCE_NAMES:
        raise ConfigError(f"unknown reference {name!r}; valid: {', '.join(REFERENCE_NAMES)}")
    if model not in THESIS_ROWS:
        raise ConfigError(f"reference {name!r} has rows for the victims {sorted(THESIS_ROWS)} (MNIST), not {model!r}")
    cells, source = thesis_numbers(path, model)
    attacks = dict(TABLE_2_2_ATTACKS)
    if model != "lr":  # the reachable maker needs a linear softmax victim
        attacks.pop("gc_reachable")
    return Reference(name, source, cells, attacks)
