"""``poisonlab report results.jsonl``: paper-style tables (md / csv / latex) and figures of a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..reporting.report import GROUP_KEYS, build_table, flatten, render
from ..sweeps import load_rows


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables (md/csv/latex) and figures from a sweep's results.jsonl",
                       description="Aggregate the finished runs of a sweep over seeds (mean ± std). "
                                   f"Group keys for --rows/--cols: {', '.join(GROUP_KEYS)}.")
    p.add_argument("results", metavar="RESULTS.jsonl", help="a results.jsonl or the sweep directory holding it")
    p.add_argument("--format", choices=("md", "csv", "latex"), default="md")
    p.add_argument("--rows", default="dataset,model,attack", help="comma-separated row keys (default dataset,model,attack)")
    p.add_argument("--cols", default="fraction", help="comma-separated column keys (default fraction; thesis "
                   "Table 2.2 layout: --rows model --cols attack)")
    p.add_argument("--output", "-o", help="write the table to this file instead of stdout")
    p.add_argument("--plot", metavar="DIR", help="also write PNG figures into DIR")
    p.add_argument("--transition-drop", type=float, default=1.0,
                   help="accuracy drop (points) that defines the observed transition (default 1.0)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.results)
    rows = load_rows(path)
    records = flatten(rows)
    failed = sum(r.get("status") != "ok" for r in rows)
    text = render(build_table(records, args.rows, args.cols), args.format)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + ("" if text.endswith("\n") else "\n"))
        print(f"table -> {args.output}")
    else:
        print(text)
    if failed:
        print(f"\n({failed} failed run(s) not in the table; see results.jsonl)")
    if args.plot:
        from ..reporting.plots import plot_drop_vs_fraction, plot_poison_grids, plot_transition

        if args.transition_drop <= 0:
            raise ConfigError("--transition-drop must be > 0")
        out = Path(args.plot)
        root = path if path.is_dir() else path.parent
        figs = [plot_drop_vs_fraction(records, out / "drop_vs_fraction.png")]
        tr, summary = plot_transition(records, out / "transition.png", args.transition_drop)
        figs.append(tr)
        grid = plot_poison_grids(records, root, out / "poison_grids.png")
        if grid:
            figs.append(grid)
        for s in summary:
            obs = "not reached" if s["observed"] is None else f"{100 * s['observed']:.2f} %"
            tau = "" if s["threshold"] is None else f", threshold {100 * s['threshold']:.2f} %"
            print(f"transition {s['dataset']}/{s['model']}/{s['attack']}: observed {obs}{tau}")
        print("figures: " + ", ".join(str(f) for f in figs))
    return 0
