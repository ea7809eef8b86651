"""Plain-text tables for the terminal."""

from __future__ import annotations

from typing import Any, Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells[1:]]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def result_table(result: dict[str, Any]) -> str:
    """The human summary of one protocol result."""
    rows = [
        ("dataset / model / attack", f"{result['dataset']} / {result['model']} / {result['attack']}"),
        ("poison fraction", f"{result['fraction']:g}  ({result['n_poison']} poisons on {result['n_train']} clean points)"),
        ("clean accuracy  (acc1)", f"{result['clean_accuracy']:.2f} %"),
        ("poisoned accuracy (acc2)", f"{result['poisoned_accuracy']:.2f} %"),
        ("accuracy drop", f"{result['accuracy_drop']:.2f} points"),
        ("attack time", f"{result['attack_seconds']:.2f} s"),
        ("total time", f"{result['total_seconds']:.2f} s"),
    ]
    if result.get("defense"):
        det = result["detection"]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        rows += [
            ("defense", result["defense"]),
            ("defended accuracy (acc3)", f"{result['defended_accuracy']:.2f} %"),
            ("drop with defense", f"{result['defended_drop']:.2f} points (without: {result['accuracy_drop']:.2f})"),
            ("detection", f"removed {det['n_removed']} ({det['n_poison_removed']} poisons): precision {fmt(det['precision'])}, "
                          f"recall {fmt(det['recall'])}, ROC-AUC {fmt(det['roc_auc'])}"),
        ]
    for k, v in (result.get("attack_info") or {}).items():
        if isinstance(v, (int, float, str)):
            rows.append((f"attack: {k}", _fmt(v)))
    return format_table(("", "value"), rows)


def transfer_table(result: dict[str, Any]) -> str:
    """The transfer matrix of :func:`poisonlab.transfer` (``transfer.json``): rows = surrogates,
    columns = targets, cells = accuracy drop (points)."""
    targets = result["targets"]
    rows = [(f"surrogate {s}", *(result["accuracy_drop"][s][t] for t in targets)) for s in result["surrogates"]]
    return format_table(("accuracy drop (%)", *(f"target {t}" for t in targets)), rows)
