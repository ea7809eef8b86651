"""Paper-style tables from a sweep's ``results.jsonl`` (thesis Tables 2.2 / 2.3 layout).

Each finished run becomes a flat record (:func:`flatten`); records are grouped by the ``rows``
and ``cols`` keys and aggregated over seeds (mean ± sample std, n). A table has, per row group,
the clean accuracy (acc1) and, per column group, "acc2 / drop" and the attack time::

    | dataset | model | clean acc (%) | label_flip[mode=rule] f=0.03: acc / drop (%) | ... time (s) |

Keys that vary across runs but are in neither ``rows`` nor ``cols`` are appended to ``rows``,
so runs with different configurations are never averaged together (only seeds are).
Formats: ``md`` (GitHub pipe table), ``latex`` (booktabs), ``csv`` (tidy: one line per cell,
numbers unformatted).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ..errors import ConfigError

#: keys a table can be organised by (``attack`` includes the options that vary between runs)
GROUP_KEYS = ("dataset", "model", "attack", "fraction", "epochs", "lr", "batch_size", "model_options")
#: keys that change the clean victim (and so acc1)
VICTIM_KEYS = ("dataset", "model", "epochs", "lr", "batch_size", "model_options")
METRICS = ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "attack_seconds")


def attack_labels(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """run id -> ``attack[opt=value,...]`` naming only the options that vary for that attack."""
    by_attack: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_attack[r["config"]["attack"]].append(r["config"].get("attack_options") or {})
    varying = {a: sorted(k for k in set().union(*opts) if len({json.dumps(o.get(k), sort_keys=True) for o in opts}) > 1)
               for a, opts in by_attack.items()}
    out = {}
    for r in rows:
        a, opts = r["config"]["attack"], r["config"].get("attack_options") or {}
        inner = ",".join(f"{k}={opts.get(k)}" for k in varying[a])
        out[r["run_id"]] = f"{a}[{inner}]" if inner else a
    return out


def flatten(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per ``ok`` row: the group keys, ``seed``, the metrics and ``run_id``/``run_dir``."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("result")]
    labels = attack_labels(ok)
    out = []
    for r in ok:
        res, cfg = r["result"], r["config"]
        recipe = res.get("config", {}).get("recipe", {})
        out.append({
            "dataset": res["dataset"], "model": res["model"], "attack": labels[r["run_id"]], "fraction": res["fraction"],
            "epochs": recipe.get("epochs", cfg.get("epochs")), "lr": recipe.get("lr", cfg.get("lr")),
            "batch_size": recipe.get("batch_size", cfg.get("batch_size")),
            "model_options": json.dumps(cfg.get("model_options") or {}, sort_keys=True),
            "seed": res["seed"], **{m: float(res[m]) for m in METRICS},
            "threshold": _threshold(res), "run_id": r["run_id"], "run_dir": r.get("run_dir", f"runs/{r['run_id']}"),
        })
    return out


#: the reachability thresholds an attack may record in ``attack_info`` (fraction units), tightest first:
#: gc's box gauge τ_gauge (linear victims, inputs in a box), then its cross-entropy threshold τ
THRESHOLD_KEYS = ("tau_gauge", "tau")


def _threshold(res: dict[str, Any]) -> float | None:
    """The tightest reachability threshold (fraction units) the run's attack recorded, if any."""
    info = res.get("attack_info") or {}
    for key in THRESHOLD_KEYS:
        v = info.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    @staticmethod
    def of(values: Iterable[float]) -> "Stat":
        v = [x for x in values if x is not None and not math.isnan(x)]
        if not v:
            return Stat(float("nan"), float("nan"), 0)
        m = sum(v) / len(v)
        s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        return Stat(m, s, len(v))

    def fmt(self, digits: int = 2, pm: str = " ± ") -> str:
        if self.n == 0:
            return "–"
        return f"{self.mean:.{digits}f}" + (f"{pm}{self.std:.{digits}f}" if self.n > 1 else "")


def _parse_keys(spec: str | Sequence[str], what: str) -> list[str]:
    keys = [k.strip() for k in (spec.split(",") if isinstance(spec, str) else spec) if k.strip()]
    bad = [k for k in keys if k not in GROUP_KEYS]
    if bad:
        raise ConfigError(f"--{what}: unknown key(s) {bad}; valid: {', '.join(GROUP_KEYS)}")
    return keys


@dataclass(frozen=True)
class Table:
    row_keys: list[str]
    col_keys: list[str]
    rows: list[tuple]
    cols: list[tuple]
    clean: dict[tuple, Stat]
    cells: dict[tuple[tuple, tuple], dict[str, Stat]]

    @property
    def clean_per_row(self) -> bool:
        """acc1 is one number per row unless a column key changes the victim (then it goes in each cell)."""
        return not any(k in VICTIM_KEYS for k in self.col_keys)


def build_table(records: Sequence[dict[str, Any]], rows: str | Sequence[str] = "dataset,model,attack",
                cols: str | Sequence[str] = "fraction") -> Table:
    """Group ``records`` (from :func:`flatten`) into a rows x cols table of seed statistics."""
    if not records:
        raise ConfigError("no finished runs to report (is results.jsonl empty, or did every run fail?)")
    row_keys, col_keys = _parse_keys(rows, "rows"), _parse_keys(cols, "cols")
    overlap = set(row_keys) & set(col_keys)
    if overlap:
        raise ConfigError(f"key(s) {sorted(overlap)} cannot be both --rows and --cols")
    for k in GROUP_KEYS:  # never average different configurations together
        if k not in row_keys and k not in col_keys and len({str(r[k]) for r in records}) > 1:
            row_keys.append(k)
    groups: dict[tuple[tuple, tuple], list[dict[str, Any]]] = defaultdict(list)
    by_row: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in records:
        rk, ck = tuple(r[k] for k in row_keys), tuple(r[k] for k in col_keys)
        groups[(rk, ck)].append(r)
        by_row[rk][r["seed"]] = r["clean_accuracy"]  # acc1 depends on the row's victim and seed only
    for g in groups.values():
        seeds = [r["seed"] for r in g]
        if len(seeds) != len(set(seeds)):
            raise ConfigError(f"runs {[r['run_id'] for r in g]} share a table cell and a seed; add a key to --rows/--cols")
    cells = {key: {m: Stat.of(r[m] for r in g) for m in METRICS} for key, g in groups.items()}
    return Table(row_keys, col_keys, sorted(by_row, key=_sort_key), sorted({ck for _, ck in groups}, key=_sort_key),
                 {rk: Stat.of(v.values()) for rk, v in by_row.items()}, cells)


def _sort_key(t: tuple) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in t)


def _col_title(keys: list[str], values: tuple) -> str:
    return " ".join(f"ε_d={v:g}" if k == "fraction" else str(v) for k, v in zip(keys, values))


def render(table: Table, fmt: str = "md") -> str:
    if fmt == "md":
        return _markdown(table)
    if fmt == "latex":
        return _latex(table)
    if fmt == "csv":
        return _csv(table)
    raise ConfigError(f"unknown table format {fmt!r}; valid: md, csv, latex")


def _cell_texts(t: Table, rk: tuple, c: tuple) -> list[str]:
    s = t.cells.get((rk, c))
    width = 2 if t.clean_per_row else 3
    if s is None:
        return ["–"] * width
    out = [] if t.clean_per_row else [s["clean_accuracy"].fmt()]
    return out + [f"{s['poisoned_accuracy'].fmt()} / {s['accuracy_drop'].fmt()}", s["attack_seconds"].fmt()]


def _markdown(t: Table) -> str:
    head = [*t.row_keys] + (["clean acc (%)"] if t.clean_per_row else [])
    for c in t.cols:
        title = _col_title(t.col_keys, c)
        head += ([] if t.clean_per_row else [f"{title}: clean acc (%)"]) + [f"{title}: acc / drop (%)", f"{title}: time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for rk in t.rows:
        cells = [str(v) for v in rk] + ([t.clean[rk].fmt()] if t.clean_per_row else [])
        for c in t.cols:
            cells += _cell_texts(t, rk, c)
        lines.append("| " + " | ".join(cells) + " |")
    n = {s["accuracy_drop"].n for s in t.cells.values()}
    lines.append(f"\nmean ± std over seeds (n = {', '.join(map(str, sorted(n)))}); drop = acc1 − acc2 in percentage points.")
    return "\n".join(lines)


def _tex(s: str) -> str:
    s = s.replace("ε_d", "\x00")  # keep the symbol's underscore out of the escaping
    return (s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
            .replace("#", r"\#").replace("\x00", r"$\varepsilon_d$").replace(" ± ", r" $\pm$ ").replace("–", "--"))


def _latex(t: Table) -> str:
    nr = len(t.row_keys) + (1 if t.clean_per_row else 0)
    w = 2 if t.clean_per_row else 3
    spec = "l" * nr + "c" * w * len(t.cols)
    top = " & ".join([""] * nr + [rf"\multicolumn{{{w}}}{{c}}{{{_tex(_col_title(t.col_keys, c))}}}" for c in t.cols])
    rules = " ".join(rf"\cmidrule(lr){{{nr + 1 + w * i}-{nr + w * (i + 1)}}}" for i in range(len(t.cols)))
    sub_cell = (["Acc/Drop", "Time (s)"] if t.clean_per_row else ["Clean Acc", "Acc/Drop", "Time (s)"]) * len(t.cols)
    sub = " & ".join([_tex(k.capitalize()) for k in t.row_keys] + (["Clean Acc"] if t.clean_per_row else []) + sub_cell)
    body = []
    for rk in t.rows:
        cells = [_tex(str(v)) for v in rk] + ([_tex(t.clean[rk].fmt())] if t.clean_per_row else [])
        cells += [_tex(x) for c in t.cols for x in _cell_texts(t, rk, c)]
        body.append(" & ".join(cells) + r" \\")
    return "\n".join([r"\begin{tabular}{" + spec + "}", r"\toprule", top + r" \\", rules, sub + r" \\", r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}"])


def _csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*t.row_keys, *t.col_keys, "n_seeds", "clean_acc_mean", "clean_acc_std", "acc_mean", "acc_std",
                "drop_mean", "drop_std", "attack_seconds_mean", "attack_seconds_std"])
    for rk in t.rows:
        for c in t.cols:
            s = t.cells.get((rk, c))
            if s is None:
                continue
            a, d, tm, cl = s["poisoned_accuracy"], s["accuracy_drop"], s["attack_seconds"], s["clean_accuracy"]
            w.writerow([*rk, *c, d.n, cl.mean, cl.std, a.mean, a.std, d.mean, d.std, tm.mean, tm.std])
    return buf.getvalue()
