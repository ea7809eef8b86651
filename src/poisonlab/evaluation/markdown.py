"""The report's blocks as tables (one source for the Markdown and the HTML report)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .summary import fmt, label
from .summary import summary_stat as _stat


@dataclass(frozen=True)
class Block:
    """One section of the report: a title, an introduction, a table and a note under it."""

    key: str
    title: str
    intro: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v * 100:.2f} %"


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}g}" if isinstance(v, float) else str(v)
    return str(v)


def headline(ev: Any) -> list[str]:
    s = ev.settings
    w = ev.worst_case
    n_atk = len([a for a in ev.attacks if a.seeds])
    clean = fmt(_stat(list(ev.clean_accuracy.values())))
    lines = []
    if w.mean is not None:
        std = f" ± {w.std:.2f}" if len(w.per_seed) > 1 else ""
        lines.append(f"Accuracy under {s['fraction'] * 100:g} % poisoning (worst case over {n_atk} attack{'' if n_atk == 1 else 's'}): "
                     f"**{w.mean:.2f}{std} %** ({label(w.attack or '')}); clean accuracy {clean} %.")
    else:
        lines.append("No attack finished: no worst case.")
    a = ev.worst_after_defense
    if a is not None and a.mean is not None:
        std = f" ± {a.std:.2f}" if len(a.per_seed) > 1 else ""
        lines.append(f"After the best defense ({a.defense}): **{a.mean:.2f}{std} %** (the worst of "
                     f"{', '.join(label(t) for t in s.get('top_attacks', []))} under it; worst: {label(a.attack or '')}).")
    return lines


def blocks(ev: Any) -> list[Block]:
    s = ev.settings
    out = []
    ref = ev.reference
    head = ["attack", "status", "poisoned accuracy (%)", "drop (points)", "attack seconds"]
    if ref is not None:
        head += ["reference acc / drop", "reference time"]
    rows = []
    for a in sorted(ev.attacks, key=lambda a: -(sum(a.accuracy_drop) / len(a.accuracy_drop)) if a.accuracy_drop else math.inf):
        sm = a.summary()
        status = "ran" if a.action == "run" else f"shortened ({a.reason})"
        if a.failed:
            status += "; failed on seed(s) " + ", ".join(f"{k}: {v}" for k, v in a.failed.items())
        row = [label(a.name), status, fmt(sm["poisoned_accuracy"]), fmt(sm["accuracy_drop"]), fmt(sm["attack_seconds"], 1)]
        if ref is not None:
            t = ref.get(a.name) or {}
            row += [(f"{t['accuracy']:.2f} / {t['drop']:.2f}" + (f" ± {t['drop_std']:.2f}" if "drop_std" in t else ""))
                    if "drop" in t else "–", f"{t['hours']:g} h" if "hours" in t else "–"]
        rows.append(row)
    clean_row = ["Clean", "", fmt(_stat(list(ev.clean_accuracy.values()))), "", ""]
    if ref is not None:
        c = (ref.get("clean") or {}).get("accuracy")
        clean_row += ["–" if c is None else f"{c:.2f}", ""]
    out.append(Block("attacks", "Attacks", f"Each attack on its defaults, {len(s['seeds'])} seed(s) "
                     f"({', '.join(map(str, s['seeds']))}); ε = {s['fraction']:g}. Drop = clean − poisoned test "
                     "accuracy of the victim retrained from scratch on D_tr ∪ D_p, mean ± std over the seeds; "
                     "attack seconds: the attack stage only.", head, [clean_row, *rows],
                     (f"Reference: {ev.reference_source}." if ref is not None else "")))

    w = ev.worst_case
    wrows = [[str(seed), f"{acc:.2f}", label(name)] for seed, (acc, name) in sorted(w.per_seed.items())]
    out.append(Block("worst", "Worst case per seed", "The lowest poisoned accuracy over the attacks at each seed; the "
                     "headline is their mean ± std.", ["seed", "poisoned accuracy (%)", "attack"], wrows))

    skipped = [d for d in ev.decisions if d.action in ("skip", "not applicable", "shorten")]
    if skipped:
        out.append(Block("decisions", "Shortened, skipped, not applicable",
                         "Nothing is left out silently: each attack or defense the evaluation did not run as asked, "
                         "and why.", ["what", "kind", "decision", "reason"],
                         [[label(d.subject), d.kind, d.action, d.reason] for d in skipped]))

    if ev.defenses:
        drows = []
        for x in sorted(ev.defenses, key=lambda x: (x.defense, x.attack)):
            sm = x.summary()
            status = "" if not x.failed else " (failed: " + "; ".join(f"seed {k}: {v}" for k, v in x.failed.items()) + ")"
            drows.append([x.defense + status, label(x.attack), fmt(sm["defended_accuracy"]), fmt(sm["precision"], 3),
                          fmt(sm["recall"], 3), fmt(sm["roc_auc"], 3), fmt(sm["seconds"], 1)])
        out.append(Block("defenses", "Defenses", "Each defense that applies, against the poisons of the two most "
                         f"damaging attacks ({', '.join(label(t) for t in s.get('top_attacks', []))}): it scores "
                         "D_tr ∪ D_p, removes the most suspicious points, and the victim is retrained on the rest. "
                         "Precision / recall of the removed set and ROC-AUC of the scores against the true poison mask.",
                         ["defense", "against", "defended accuracy (%)", "precision", "recall", "ROC-AUC", "seconds"],
                         drows))

    trows = []
    for seed, t in sorted(ev.theory.items()):
        if "error" in t:
            trows.append([str(seed), "failed: " + str(t["error"])] + ["–"] * 7)
            continue
        trows.append([str(seed), _num(t.get("target_test_accuracy"), 4), _pct(t.get("tau")), _num(t.get("min_poisons")),
                      _pct(t.get("tau_box")), _pct(t.get("tau_gauge")), _num(t.get("min_poisons_box")),
                      _num(t.get("fraction_passes")), _num(t.get("fraction_passes_gauge"))])
    notes = sorted({str(t["box_not_applicable"]) for t in ev.theory.values() if t.get("box_not_applicable")})
    out.append(Block("theory", "Theory: how much poison reaching a target needs",
                     "For the GradPC target (the clean victim corrupted by GradPC, ε_w = 0.5; the target the gc attack "
                     "aims at) made from each seed's clean victim: τ, the cross-entropy threshold of the last layer "
                     "(poisons per clean point; a necessary condition), the fewest poisons it allows, and for a linear "
                     "softmax victim with bounded inputs the box thresholds τ_box ≤ τ_gauge. ε passes: whether the "
                     "evaluated fraction meets each necessary condition (no: no poison set of that size can produce "
                     "the target).",
                     ["seed", "target accuracy (%)", "τ", "min poisons", "τ_box", "τ_gauge", "min poisons (box)",
                      "ε passes τ", "ε passes τ_gauge"], trows, "; ".join(notes)))

    prices = s.get("prices") or {}
    if prices:
        prow = [[label(k), " / ".join(f"{t:.2f}" for t in v["probe_seconds"]),
                 "–" if v["per_iteration"] is None else f"{v['per_iteration']:.3g}", f"{v['iterations']:g}",
                 f"{v['expected_seconds']:.1f}",
                 ", ".join(f"{a}={b}" for a, b in v["probe_options"].items()) or "(the full attack)"]
                for k, v in prices.items() if not k.startswith("_")]
        share = prices.get("_defense_share", 0.0)
        lanes = int(prices.get("_lanes", 1))
        parallel = (f", {lanes} cells at once: {s['time_budget'] * lanes:g} worker-seconds, the cells' "
                    "recorded seconds counted against it" if lanes > 1 else "")
        out.append(Block("prices", "Prices (time budget)",
                         f"Budget {s['time_budget']:g} s{parallel} ({share * 100:g} % of it kept for the defenses). Each attack "
                         f"was timed on seed {s['seeds'][0]}'s clean victim with its work cut down (probe options): "
                         "cold, warm, and warm at twice the iterations; expected = cold + per-iteration seconds × the "
                         "iterations left. An attack without an iteration count ran once in full. One training of "
                         f"the victim: {prices.get('_train_seconds', 0.0):.2f} s; the probes took "
                         f"{prices.get('_spent', 0.0):.1f} s. Defenses are priced in trainings per cell (the victim on "
                         "D_tr ∪ D_p comes from the attack's cache; MaxUp, kNN and Sever cost more) and budgeted "
                         "cheapest first; what was decided ran longest first; the theory "
                         "cells (one GradPC target per seed) are not budgeted.",
                         ["attack", "probe seconds (cold / warm / warm ×2)", "seconds per iteration", "iterations",
                          "expected seconds", "probe options"], prow))
    return out


def settings_lines(ev: Any) -> list[str]:
    s = ev.settings
    v = s["victim"]
    lines = [f"command: {s['command']}",
             f"data: {s['dataset']} (|D_tr| = {s['n_train']}, input {tuple(s['input_shape'])}, {s['num_classes']} classes)",
             f"victim: {v.get('model')} {v.get('model_options') or ''} recipe {v.get('recipe')}; device {s['device']}",
             f"fraction: {s['fraction']:g}; seeds: {s['seeds']}; time budget: {s['time_budget']}; backend: {s['backend']} "
             f"(workers {s['workers']})"]
    for name, a in s["attacks"].items():
        lines.append(f"attack {name}: {a['attack']} {a['options'] or '(defaults)'}")
    for a in ev.attacks:
        if a.action == "shorten":
            lines.append(f"attack {a.name} ran with: {a.options}")
    lines.append(f"defenses: {', '.join(s['defenses']) or 'none'}")
    lines.append(f"poisonlab {s['poisonlab_version']}, torch {s['torch_version']}")
    if s.get("directory"):
        lines.append(f"results: {s['directory']}/results.jsonl (rerun the command to resume)")
    return lines


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|",
                      *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)])


def title(ev: Any) -> str:
    s = ev.settings
    n = next((a.n_poison for a in ev.attacks if a.n_poison is not None), None)
    return (f"Evaluation: {s['dataset']} / {s['model']}, ε = {s['fraction'] * 100:g} %"
            + (f" ({n} poisons on |D_tr| = {s['n_train']})" if n is not None else ""))


def render_markdown(ev: Any) -> str:
    parts = [f"# {title(ev)}", "", *headline(ev), ""]
    for b in blocks(ev):
        parts += [f"## {b.title}", "", b.intro, "", _md_table(b.headers, b.rows), ""]
        if b.note:
            parts += [b.note, ""]
    parts += ["## Settings", "", "```", *settings_lines(ev), "```", ""]
    return "\n".join(parts)
