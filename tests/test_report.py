"""Report tables and figures: aggregation against numpy, layouts, formats, transition estimate."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from poisonlab.errors import ConfigError
from poisonlab.reporting.plots import observed_transition, plot_drop_vs_fraction, plot_transition
from poisonlab.reporting.report import build_table, flatten, render


def _row(i, model, mode, fraction, seed, acc1, acc2, secs=1.0, status="ok", threshold=None):
    info = {"tau": threshold} if threshold is not None else {}  # the key gc writes
    return {"run_id": f"id{i}", "status": status, "run_dir": f"runs/id{i}",
            "config": {"attack": "label_flip", "attack_options": {"mode": mode}, "model_options": {}},
            "result": None if status != "ok" else {
                "dataset": "digits", "model": model, "attack": "label_flip", "fraction": fraction, "seed": seed,
                "clean_accuracy": acc1, "poisoned_accuracy": acc2, "accuracy_drop": acc1 - acc2,
                "attack_seconds": secs, "attack_info": info,
                "config": {"recipe": {"epochs": 5, "lr": 0.1, "batch_size": 64}}}}


@pytest.fixture()
def rows():
    rng = np.random.default_rng(0)
    out, i = [], 0
    for model in ("lr", "nn"):
        acc1 = {s: 90 + rng.normal() for s in range(3)}
        for mode in ("rule", "random"):
            for f in (0.03, 0.1):
                for s in range(3):
                    out.append(_row(i, model, mode, f, s, acc1[s], acc1[s] - 10 * f - rng.random(), secs=rng.random()))
                    i += 1
    out.append(_row(i, "lr", "rule", 0.03, 9, 0, 0, status="failed"))
    return out


def test_cells_are_seed_means_and_sample_stds(rows):
    recs = flatten(rows)
    assert len(recs) == 24 and {r["attack"] for r in recs} == {"label_flip[mode=rule]", "label_flip[mode=random]"}
    t = build_table(recs)
    assert t.row_keys == ["dataset", "model", "attack"] and t.col_keys == ["fraction"]
    key = (("digits", "nn", "label_flip[mode=random]"), (0.1,))
    sel = [r for r in recs if r["model"] == "nn" and r["attack"] == "label_flip[mode=random]" and r["fraction"] == 0.1]
    for m in ("poisoned_accuracy", "accuracy_drop", "attack_seconds"):
        v = np.array([r[m] for r in sel])
        assert t.cells[key][m].mean == pytest.approx(v.mean(), abs=1e-12)
        assert t.cells[key][m].std == pytest.approx(v.std(ddof=1), abs=1e-12)
        assert t.cells[key][m].n == 3
    clean = np.array([r["clean_accuracy"] for r in sel])
    assert t.clean[key[0]].mean == pytest.approx(clean.mean(), abs=1e-12)


def test_formats_and_layouts(rows):
    recs = flatten(rows)
    md = render(build_table(recs), "md")
    assert md.count("\n| digits |") == 4 and "ε_d=0.03: acc / drop (%)" in md and " ± " in md
    thesis = build_table(recs, rows="model", cols="attack,fraction")  # Table 2.2 layout
    assert thesis.rows == [("lr",), ("nn",)] and len(thesis.cols) == 4 and thesis.clean_per_row
    tex = render(thesis, "latex")
    assert tex.startswith(r"\begin{tabular}{llcccccccc}") and r"label\_flip[mode=rule] $\varepsilon_d$=0.03" in tex
    assert tex.count(r"\\") == 4  # two header lines + two body rows
    per_cell = build_table(recs, rows="attack", cols="model,fraction")  # model in columns: acc1 goes per cell
    assert not per_cell.clean_per_row and "digits/lr" not in render(per_cell, "md")
    assert "lr ε_d=0.03: clean acc (%)" in render(per_cell, "md")
    table = list(csv.DictReader(io.StringIO(render(build_table(recs), "csv"))))
    assert len(table) == 8 and {r["n_seeds"] for r in table} == {"3"}
    one = next(r for r in table if r["model"] == "lr" and r["fraction"] == "0.1" and r["attack"] == "label_flip[mode=rule]")
    sel = [r for r in recs if r["model"] == "lr" and r["fraction"] == 0.1 and r["attack"] == "label_flip[mode=rule]"]
    assert float(one["drop_mean"]) == pytest.approx(np.mean([r["accuracy_drop"] for r in sel]), abs=1e-9)


def test_varying_keys_are_never_averaged_together(rows):
    recs = flatten(rows)
    t = build_table(recs, rows="attack", cols="fraction")  # model varies: appended to rows
    assert t.row_keys == ["attack", "model"]
    with pytest.raises(ConfigError, match="unknown key"):
        build_table(recs, rows="colour")
    with pytest.raises(ConfigError, match="both"):
        build_table(recs, rows="fraction", cols="fraction")
    with pytest.raises(ConfigError, match="no finished runs"):
        build_table([])
    with pytest.raises(ConfigError, match="share a table cell and a seed"):
        build_table(recs + [dict(recs[0], run_id="dup")])


def test_observed_transition_known_answers():
    f = [0.0, 0.1, 0.2, 0.4]
    assert observed_transition(f, [0.0, 0.5, 1.5, 3.0], 1.0) == pytest.approx(0.15)
    assert observed_transition(f, [2.0, 3.0, 4.0, 5.0], 1.0) == 0.0
    assert observed_transition(f, [0.0, 0.1, 0.2, 0.3], 1.0) is None
    assert observed_transition(f, [0.0, 0.1, 0.2, 1.0], 1.0) == pytest.approx(0.4)


def test_figures_are_written(rows, tmp_path):
    import matplotlib.image as mpimg

    rows = rows + [_row(100 + s, "lr", "tau", f, s, 90.0, 90.0 - 20 * f, threshold=0.05) for f in (0.03, 0.1) for s in range(2)]
    recs = flatten(rows)
    p = plot_drop_vs_fraction(recs, tmp_path / "a.png")
    q, summary = plot_transition(recs, tmp_path / "b.png", level=1.0)
    for path in (p, q):
        img = mpimg.imread(path)
        assert img.shape[0] > 300 and img.shape[1] > 400
    tau = [s for s in summary if s["threshold"] is not None]
    assert len(tau) == 1 and tau[0]["threshold"] == 0.05 and tau[0]["observed"] == pytest.approx(0.05)


def test_tau_vs_observed_plot_runs_on_a_real_gc_sweep(tmp_path):
    """gc records its thresholds in attack_info (tau, tau_gauge); the report must find them in a real
    sweep (it once read a key no attack writes, so the τ-vs-observed plot never ran)."""
    from poisonlab.sweeps import ResultsLog, expand, run_sweep

    spec = {"name": "gc-tau", "base": {"dataset": "digits", "model": "lr", "epochs": 2, "device": "cpu",
                                       "attack": "gc"},
            "cases": [{"attack_options.target_options.eps_w": 0.3, "attack_options.steps": 3,
                       "attack_options.target_options.steps": 3}],
            "grid": {"fraction": [0.05, 0.5]}}
    run_sweep(expand(spec, "gc.yaml"), tmp_path / "s", workers=1, progress=False)
    recs = flatten(ResultsLog(tmp_path / "s" / "results.jsonl").latest().values())
    assert len(recs) == 2 and all(r["threshold"] is not None and r["threshold"] > 0 for r in recs)
    gauge = [r["threshold"] for r in recs]
    assert gauge[0] == pytest.approx(gauge[1])  # the same target at both fractions: the same τ_gauge
    path, summary = plot_transition(recs, tmp_path / "t.png", level=0.0)
    (row,) = summary
    assert row["threshold"] == pytest.approx(gauge[0])
    assert path.stat().st_size > 1000
