"""Thesis Table 2.2, LR row: MNIST, ε = 3 %, every indiscriminate baseline, 3 seeds.

    python bench/table_2_2.py                 # MNIST, the victim's thesis recipe (lr 0.1, 100 epochs, batch 1000)
    python bench/table_2_2.py --quick         # sklearn digits, 20 victim epochs (about a minute)
    python bench/table_2_2.py --attacks i_min_max,gc --seeds 0   # some cells only
    python bench/table_2_2.py --model nn --seeds 0 --attacks label_flip,min_max,gc \
        --probe tgda,back_gradient,metapoison          # the NN row: run what fits, price the rest

Columns: clean, label_flip (rule y ← 9 − y, the thesis'), min_max, i_min_max, back_gradient,
metapoison, gradient_matching, tgda, gc, gc_reachable. Every cell is the library's protocol
(``poisonlab.protocol.run_protocol``: pretrain → attack → retrain from scratch on D_tr ∪ D_p →
test accuracy) for each seed (the seed also draws the D_tr / D_v split, as ``poisonlab run --seed``
does); the table gives mean ± std over the seeds of the accuracy drop and of the attack's seconds,
beside the thesis' numbers (read from the thesis text when it is at ../shared/thesis.txt, else the
copy embedded below; the thesis has no cell for metapoison, gradient_matching or gc on MNIST).

Attack options (``ATTACK_OPTIONS``): each attack's defaults (tgda's are the measured α = 0.1
with selection, not the thesis' α = 0.01, which barely moves here: docs/studies/tgda.md), gc
with its default GradPC target (ε_w = 0.5; ``--gc-target FILE`` uses a saved target instead), and the
row ``gc_reachable`` ("GC (reachable target)"): gc aimed at the ``"reachable"`` target maker's
target, the most damaging one found with τ_gauge ≤ 0.8·ε, searched per seed from that seed's clean
victim (``poisonlab.attacks.reachable_target``), with plan labels and 600 steps of 0.05
(bench/gc_reach.py: the options under which GC reaches such targets). ``--quick`` shortens each
attack that digits does not make cheap (``QUICK_OPTIONS``: metapoison's ensemble, tgda's epochs).

``--model nn`` (the thesis' 784-1000-1000 MLP) writes ``table_2_2_nn[_quick].json``; the row
``gc_reachable`` needs a linear softmax victim and is skipped there. ``--probe A,B`` does not run
those cells: it times each attack with its work cut to ``PROBE_OPTIONS`` (one epoch, one outer step)
on the real data and victim, and records the seconds that the default options would take
(measured × the ratio of iteration counts), marking the cell "not run: GPU-only here" — the price
that puts it out of a CPU session, measured rather than guessed.

Results: ``bench/results/table_2_2[_nn][_quick].json`` (every run, rewritten atomically after each, so an
interrupted table resumes: finished runs are skipped unless ``--force``) and the markdown table
beside it (``.md``). The clean victims go through ``--cache-dir`` (trained once per seed). Use one
torch thread (``OMP_NUM_THREADS=1``, set by default here) and ``nice`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)

import torch  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.protocol import RunConfig, run_protocol, write_atomic, write_json  # noqa: E402

ATTACKS = ("label_flip", "min_max", "i_min_max", "back_gradient", "metapoison", "gradient_matching", "tgda", "gc",
           "gc_reachable")
#: a row that is another attack's with other options: row key -> registered attack
ATTACK_OF = {"gc_reachable": "gc"}
ATTACK_OPTIONS: dict[str, dict] = {
    "label_flip": {"mode": "rule"},
    "min_max": {},
    "i_min_max": {},
    "back_gradient": {},
    "metapoison": {},
    "gradient_matching": {},
    "tgda": {},
    "gc": {"target": "gradpc"},
    "gc_reachable": {"target": "reachable", "init": "plan", "steps": 600, "lr": 0.05},
}
QUICK_OPTIONS: dict[str, dict] = {  # --quick (digits): the full options where digits makes them cheap
    "label_flip": {},
    "min_max": {},
    "i_min_max": {},
    "back_gradient": {},
    "metapoison": {"ensemble": 8},
    "gradient_matching": {},
    "tgda": {"epochs": 20, "selection.every": 5},
    "gc": {},
    "gc_reachable": {"reachable.steps": 60, "reachable.step": 0.005},  # the 20-epoch digits victim starts at τ_gauge ≈ 0.13 > 0.024
}
#: --probe: each attack's work cut to a few iterations (the cost is then scaled by ``_work``)
PROBE_OPTIONS: dict[str, dict] = {
    "tgda": {"epochs": 1, "selection.every": 0},
    "back_gradient": {"epochs": 1},
    "metapoison": {"outer_steps": 1},
    "min_max": {"epochs": 1},
    "gradient_matching": {"steps": 10, "restarts": 1},
    "gc": {"steps": 10},
}
LABELS = {"clean": "Clean", "label_flip": "Label flip", "min_max": "Min-max", "i_min_max": "i-Min-max",
          "back_gradient": "BG", "metapoison": "MetaPoison", "gradient_matching": "Gradient matching",
          "tgda": "TGDA", "gc": "GC", "gc_reachable": "GC (reachable target)"}

#: thesis Table 2.2, LR row (accuracy %, drop in points, attack hours); the copy used without the text
THESIS_LR = {
    "clean": {"accuracy": 92.35},
    "label_flip": {"accuracy": 90.83, "drop": 1.52, "hours": 0.0},
    "min_max": {"accuracy": 89.80, "drop": 2.55, "hours": 0.7},
    "i_min_max": {"accuracy": 89.56, "drop": 2.79, "hours": 19.0},
    "back_gradient": {"accuracy": 89.82, "drop": 2.53, "hours": 27.0},
    "tgda": {"accuracy": 89.56, "drop": 2.79, "drop_std": 0.07, "hours": 1.1},
}
#: thesis Table 2.2, NN row (the MLP 784-1000-1000)
THESIS_NN = {
    "clean": {"accuracy": 98.04},
    "label_flip": {"accuracy": 97.99, "drop": 0.05, "hours": 0.0},
    "min_max": {"accuracy": 98.07, "drop": -0.03, "hours": 13.0},
    "i_min_max": {"accuracy": 97.82, "drop": 0.22, "hours": 73.0},
    "back_gradient": {"accuracy": 97.67, "drop": 0.37, "hours": 239.0},
    "tgda": {"accuracy": 96.54, "drop": 1.50, "drop_std": 0.02, "hours": 15.0},
}
THESIS_ROWS = {"lr": ("LR", THESIS_LR), "nn": ("NN", THESIS_NN)}
THESIS_TEXT = Path(__file__).resolve().parents[2] / "shared" / "thesis.txt"
#: measured on this machine class (one thread) on MNIST LR, ε = 3 %, seed 0: the attack stage only
REFERENCE_SECONDS = {
    "label_flip": (1.1, "development run through run_protocol"),
    "i_min_max": (11.0, "development run through run_protocol, default options (weighting union), load ≈ 3 on 2 cores"),
    "gradient_matching": (31.6, "development run through run_protocol, default options (240 steps, 8 restarts)"),
    "tgda": (595.0, "bench/results/tgda_mnist_table22.json (200 epochs, select_every 10)"),
    "gc": (29.0, "bench/results/gc_mnist.json (300 steps; + the GradPC target, made once per seed)"),
    "back_gradient": (114.0, "bench/results/table_2_2.json, 3 seeds (50 epochs)"),
    "metapoison": (49.0, "bench/results/table_2_2.json, 3 seeds (defaults)"),
    "gc_reachable": (117.0, "bench/results/table_2_2.json, seeds 0-1 (the maker's search + GC)"),
}


def thesis_numbers(path: Path = THESIS_TEXT, model: str = "lr") -> tuple[dict, str]:
    """Table 2.2's row of ``model`` ("lr" or "nn") parsed from the thesis text (Clean, Label Flip,
    Min-max, i-Min-max, BG, TGDA), or the embedded copy when the text is absent or its row does not parse."""
    label, embedded = THESIS_ROWS[model]
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return embedded, "embedded copy (thesis text not found)"
    line = next((ln for ln in text.splitlines() if re.match(rf"^{label}\s+\d+\.\d+\s+\d+\.\d+/", ln)), None)
    if line is None:
        return embedded, f"embedded copy (no {label} row in the thesis text)"
    clean = float(line.split()[1])
    cells = re.findall(r"(\d+\.\d+)/\s*(-?\d+\.\d+)(.*?)(\d+(?:\.\d+)?)\s*hrs", line)
    cols = ("label_flip", "min_max", "i_min_max", "back_gradient", "tgda")
    if len(cells) != len(cols):
        return embedded, f"embedded copy (the thesis' {label} row did not parse)"
    out: dict = {"clean": {"accuracy": clean}}
    for name, (acc, drop, middle, hours) in zip(cols, cells):
        out[name] = {"accuracy": float(acc), "drop": float(drop), "hours": float(hours)}
        std = re.search(r"(\d+)[:.](\d+)", middle)  # "± 0.07" comes out of the PDF as "� 0:07"
        if std:
            out[name]["drop_std"] = float(f"{std.group(1)}.{std.group(2)}")
    return out, f"{path} (Table 2.2, {label} row)"


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _work(name: str, o: dict) -> float:
    """The attack's iteration count (the factor its cost grows with, besides the data)."""
    return {"min_max": o.get("epochs", 1), "back_gradient": o.get("epochs", 1) * o.get("k", 1),
            "metapoison": o.get("outer_steps", 1) * o.get("ensemble", 1), "tgda": o.get("epochs", 1),
            "gc": o.get("steps", 1), "gc_reachable": o.get("steps", 1),
            "gradient_matching": o.get("steps", 1) * o.get("restarts", 1)}.get(name, 1.0)


def summarise(record: dict, thesis: dict) -> list[dict]:
    rows = []
    runs = record["runs"]
    seeds = record["seeds"]
    per_seed_clean: dict[int, float] = {}
    for r in runs.values():
        per_seed_clean.setdefault(r["seed"], r["clean_accuracy"])
    m, sd = _mean_std([per_seed_clean[s] for s in seeds if s in per_seed_clean])
    rows.append({"attack": "clean", "accuracy_mean": m, "accuracy_std": sd, "n_seeds": len(per_seed_clean),
                 "thesis": thesis.get("clean")})
    for a in record["attacks"]:
        rs = [runs[f"{a}/{s}"] for s in seeds if f"{a}/{s}" in runs]
        dm, dsd = _mean_std([r["accuracy_drop"] for r in rs])
        am, asd = _mean_std([r["poisoned_accuracy"] for r in rs])
        tm, tsd = _mean_std([r["attack_seconds"] for r in rs])
        rows.append({"attack": a, "n_seeds": len(rs), "drop_mean": dm, "drop_std": dsd, "accuracy_mean": am,
                     "accuracy_std": asd, "attack_seconds_mean": tm, "attack_seconds_std": tsd,
                     "thesis": thesis.get(a)})
    return rows


def markdown(record: dict, rows: list[dict]) -> str:
    q = record["quick"]
    row = THESIS_ROWS[record.get("model", "lr")][0]
    head = (f"# Table 2.2, {row} row — {record['dataset']}, ε = {record['fraction']:g}, seeds {record['seeds']}"
            + (" (--quick: digits, 20 victim epochs, metapoison and tgda shortened; 3 % of digits is ≈ 30 poisons and one test image is 0.28 points, so this checks the plumbing, not the thesis)" if q else "") + "\n\n")
    lines = ["| attack | accuracy (%) | drop (points) | attack seconds | thesis acc / drop | thesis time |",
             "| --- | --- | --- | --- | --- | --- |"]

    def f(m, s, digits=2):
        return "—" if m is None or (isinstance(m, float) and math.isnan(m)) else f"{m:.{digits}f} ± {s:.{digits}f}"

    for r in rows:
        t = r.get("thesis") or {}
        if r["attack"] == "clean":
            lines.append(f"| {LABELS['clean']} | {f(r['accuracy_mean'], r['accuracy_std'])} | — | — | "
                         f"{t.get('accuracy', '—')} | — |")
            continue
        td = (f"{t['accuracy']:.2f} / {t['drop']:.2f}" + (f" ± {t['drop_std']:.2f}" if "drop_std" in t else "")) if t else "—"
        th = f"{t['hours']:g} h" if t else "—"
        lines.append(f"| {LABELS[r['attack']]} | {f(r['accuracy_mean'], r['accuracy_std'])} | "
                     f"{f(r['drop_mean'], r['drop_std'])} | {f(r['attack_seconds_mean'], r['attack_seconds_std'], 1)} | "
                     f"{td} | {th} |")
    for a, pr in record.get("probes", {}).items():
        t = (record.get("thesis") or {}).get(a) or {}
        td = f"{t['accuracy']:.2f} / {t['drop']:.2f}" if t else "—"
        th = f"{t['hours']:g} h" if t else "—"
        lines.append(f"| {LABELS[a]} | not run: GPU-only here | — | ≈ {pr['expected_seconds']:.0f} (priced: "
                     f"{pr['probe_seconds']:.1f} s × {pr['work_ratio']:g}) | {td} | {th} |")
    note = (f"\nThesis numbers from {record['thesis_source']}. Drop = clean − poisoned test accuracy of the victim "
            "retrained from scratch on D_tr ∪ D_p (mean ± std over the seeds); attack seconds: the attack stage only, "
            f"{record['environment']['torch_threads']} torch thread(s). Options of every attack are in the JSON "
            f"(`runs.*.attack_options`). Command: `{record['environment']['command']}`.")
    return head + "\n".join(lines) + "\n" + note + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="digits, 20 victim epochs (about a minute)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated (default all: {','.join(ATTACKS)})")
    p.add_argument("--model", default="lr", choices=sorted(THESIS_ROWS), help="victim row of the table (default lr)")
    p.add_argument("--probe", default="", help="comma-separated attacks to price instead of run (see PROBE_OPTIONS)")
    p.add_argument("--fraction", type=float, default=0.03)
    p.add_argument("--victim-epochs", type=int, help="victim recipe epochs (default: 100, the thesis; --quick 20)")
    p.add_argument("--gc-target", default=None, help="a .safetensors target model for gc (default GradPC ε_w = 0.5)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="result JSON (default bench/results/table_2_2[_quick].json)")
    p.add_argument("--runs-dir", default="runs/bench_table_2_2", help="each run's artifacts")
    p.add_argument("--cache-dir", default="runs/bench_table_2_2/cache", help="clean victims and targets ('' for none)")
    p.add_argument("--force", action="store_true", help="rerun runs already in the result file")
    args = p.parse_args(argv)

    attacks = [a for a in args.attacks.split(",") if a]
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        p.error(f"unknown attacks {unknown}; choose from {list(ATTACKS)}")
    probes = [a for a in args.probe.split(",") if a]
    if sorted(set(probes) - set(PROBE_OPTIONS)):
        p.error(f"--probe: choose from {sorted(PROBE_OPTIONS)}")
    if args.model != "lr" and "gc_reachable" in attacks:  # the reachable maker needs a linear softmax victim
        attacks.remove("gc_reachable")
    attacks = [a for a in attacks if a not in probes]
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    dataset = "digits" if args.quick else "mnist"
    victim_epochs = args.victim_epochs if args.victim_epochs is not None else (20 if args.quick else None)
    suffix = ("" if args.model == "lr" else f"_{args.model}") + ("_quick" if args.quick else "")
    out = Path(args.out or RESULTS / f"table_2_2{suffix}.json")
    thesis, source = thesis_numbers(model=args.model)

    record = json.loads(out.read_text()) if out.is_file() and not args.force else {}
    record.setdefault("runs", {})
    record.update({"dataset": dataset, "model": args.model, "quick": bool(args.quick), "fraction": args.fraction, "seeds": seeds,
                   "attacks": attacks, "victim_epochs": victim_epochs, "thesis": thesis, "thesis_source": source,
                   "environment": environment()})
    for seed in seeds:
        for attack in attacks:
            key = f"{attack}/{seed}"
            opts = {**ATTACK_OPTIONS[attack], **(QUICK_OPTIONS[attack] if args.quick else {})}
            if attack == "gc" and args.gc_target:
                opts["target"] = args.gc_target
            if key in record["runs"] and not args.force:
                prev = {k: v for k, v in record["runs"][key].get("attack_options", {}).items() if k != "checkpoint"}
                now = {k: v for k, v in build_attack(ATTACK_OF.get(attack, attack), opts).options().items() if k != "checkpoint"}
                if prev == now and record["runs"][key].get("victim_epochs") == victim_epochs \
                        and record["runs"][key].get("model", "lr") == args.model:
                    print(f"[table_2_2] {key}: done before, skipped", file=sys.stderr)
                    continue
            cfg = RunConfig(dataset=dataset, model=args.model, attack=ATTACK_OF.get(attack, attack), fraction=args.fraction, seed=seed,
                            epochs=victim_epochs, data_dir=args.data_dir, device="cpu",
                            out=f"{args.runs_dir}/{dataset}/{attack}-s{seed}", attack_options=opts,
                            cache_dir=args.cache_dir or None)
            t0 = time.perf_counter()
            r = run_protocol(cfg, progress=sys.stderr.isatty(), log=lambda s: None)
            info = r["attack_info"]
            row = {"attack": attack, "model": args.model, "seed": seed, "fraction": args.fraction, "victim_epochs": victim_epochs,
                   "n_train": r["n_train"], "n_poison": r["n_poison"],
                   "clean_accuracy": r["clean_accuracy"], "poisoned_accuracy": r["poisoned_accuracy"],
                   "accuracy_drop": r["accuracy_drop"], "attack_seconds": r["attack_seconds"],
                   "total_seconds": time.perf_counter() - t0, "seconds_per_epoch": info.get("seconds_per_epoch"),
                   "attack_options": r["config"]["attack_options"], "recipe": r["config"]["recipe"],
                   "artifacts": r["config"]["out"]}
            if ATTACK_OF.get(attack, attack) == "gc":  # did GC reach its target? (τ_gauge, residual, agreement)
                t = info.get("target_info") or {}
                row["gc"] = {"tau_gauge": info.get("tau_gauge"), "residual": info.get("final_rel_grad_norm"),
                             "agreement": info.get("retrained_target_agreement"),
                             "target_test_accuracy": info.get("target_test_accuracy"),
                             "target_seconds": t.get("seconds"), "target_cache": t.get("cache")}
            record["runs"][key] = row
            record["table"] = summarise(record, thesis)
            write_json(out, record)
            print(f"[table_2_2] {key}: {row['clean_accuracy']:.2f} -> {row['poisoned_accuracy']:.2f} "
                  f"(drop {row['accuracy_drop']:.2f}), attack {row['attack_seconds']:.1f} s, run {row['total_seconds']:.1f} s",
                  file=sys.stderr)
    if probes:
        record.setdefault("probes", {}).update(price(args, dataset, victim_epochs, probes, seeds[0] if seeds else 0))
    record["table"] = summarise(record, thesis)
    if args.quick and args.model == "lr":  # the references are MNIST LR cells
        record["expected_full_seconds"] = expected_full(record)
    write_json(out, record)
    md = markdown(record, record["table"])
    write_atomic(out.with_suffix(".md"), md.encode())
    print(md)
    if args.quick and args.model == "lr":
        print("Expected attack seconds per cell of the full MNIST table (one thread; rough, see the JSON):")
        for a, e in record["expected_full_seconds"].items():
            print(f"  {a:18s} {e['seconds']:8.0f} s   ({e['how']})")
    return 0


def price(args, dataset: str, victim_epochs: int | None, probes: list[str], seed: int) -> dict:
    """Each attack in ``probes`` timed with ``PROBE_OPTIONS`` on the real data and clean victim (not
    retrained), and the seconds its default options would take: probe seconds × the ratio of the
    iteration counts (``_work``; setup costs are counted once per iteration, so this over- rather than
    under-prices)."""
    from common import clean_victim

    from poisonlab.seeding import torch_generator

    cfg = RunConfig(dataset=dataset, model=args.model, seed=seed, epochs=victim_epochs, data_dir=args.data_dir,
                    device="cpu", cache_dir=args.cache_dir or None)
    prep, _, victim = clean_victim(cfg)
    out = {}
    for a in probes:
        name = ATTACK_OF.get(a, a)
        full = build_attack(name, ATTACK_OPTIONS[a]).options()
        attack = build_attack(name, {**ATTACK_OPTIONS[a], **PROBE_OPTIONS[a]})
        t0 = time.perf_counter()
        attack.poison(prep.data, victim, args.fraction, generator=torch_generator(seed, "attack"))
        secs = time.perf_counter() - t0
        ratio = _work(a, full) / max(_work(a, attack.options()), 1e-9)
        out[a] = {"status": "not run: GPU-only here", "probe_options": PROBE_OPTIONS[a], "probe_seconds": secs,
                  "work_ratio": ratio, "expected_seconds": secs * ratio, "seed": seed,
                  "torch_threads": torch.get_num_threads()}
        print(f"[table_2_2] {a}: probe {secs:.1f} s × {ratio:g} ≈ {secs * ratio:.0f} s at the default options",
              file=sys.stderr, flush=True)
    return out


def expected_full(record: dict) -> dict:
    """Rough attack seconds of each full MNIST cell: a measured MNIST reference where there is one,
    else the quick run's seconds × the data factor (|D_tr|·input size, MNIST / digits) × the ratio of
    the attack's iteration counts (full / quick options). Per-round Python overhead makes the scaled
    figures upper-bound-like (digits' batches are tiny)."""
    out = {}
    for a in record["attacks"]:
        rs = [r for r in record["runs"].values() if r["attack"] == a]
        if not rs:
            continue
        data_factor = (42000 * 784) / (rs[0]["n_train"] * 64)  # MNIST D_tr × 28·28 over digits' D_tr × 8·8
        if a in REFERENCE_SECONDS:
            sec, how = REFERENCE_SECONDS[a]
            out[a] = {"seconds": sec, "how": f"measured on MNIST: {how}"}
            continue
        quick_s = statistics.fmean(r["attack_seconds"] for r in rs)
        full_o = build_attack(ATTACK_OF.get(a, a), ATTACK_OPTIONS[a]).options()
        quick_o = rs[0]["attack_options"]
        ratio = _work(a, full_o) / max(_work(a, quick_o), 1e-9)
        out[a] = {"seconds": quick_s * data_factor * ratio,
                  "how": f"quick {quick_s:.2f} s × data {data_factor:.0f} × iterations {ratio:g}"}
    return out


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sys.exit(main())
