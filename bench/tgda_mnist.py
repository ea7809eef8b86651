"""TGDA on MNIST: thesis Table 2.2 and the ablations of §2.6.3, one command per table.

    python bench/tgda_mnist.py TABLE [--models lr,nn,cnn] [--quick] [-A KEY=VALUE ...] [-M KEY=VALUE ...]

TABLE is one of
  table22      clean → poisoned accuracy and drop per model (tgda; add --attacks for baselines)
  leader       attacker vs defender as leader            (thesis LR 2.79 vs 2.56)
  formulation  non-zero-sum vs zero-sum                  (2.79 vs 0.02)
  pretrain     with vs without attacker pretraining      (2.79 vs 0.26)
  mn           (m, n) ∈ {(1,0), (1,1), (1,20), (20,1), (20,20)}
  start        warm vs cold start                        (2.79 vs 2.41)
  eps          drop vs ε ∈ {0.01, 0.03, 0.1, 0.3, 1.0}

Every run is the library's protocol (pretrain → attack → retrain from scratch) via
``poisonlab.protocol.run_protocol``; results go to ``bench/results/tgda_mnist_<TABLE>[_quick].json``
(rewritten atomically after every run; finished runs are skipped when the command is repeated,
so an interrupted table resumes; ``--force`` reruns). ``--quick`` uses the embedded ``digits``
data, 20 victim epochs and 2 attack epochs: a seconds-long check that the table's plumbing works.
Set POISONLAB_DATA (or --data-dir) to the directory holding mnist.npz. Use OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from poisonlab.cli.run_cmd import parse_key_values  # noqa: E402
from poisonlab.protocol import RunSpec, run_protocol, write_json  # noqa: E402

THESIS = {  # thesis drops (percentage points), MNIST, ε = 3 %
    "table22": {"lr": 2.79, "nn": 1.50, "cnn": 1.11},
    "leader": {"attacker": 2.79, "defender": 2.56},
    "formulation": {"nonzero_sum": 2.79, "zero_sum": 0.02},
    "pretrain": {"true": 2.79, "false": 0.26},
    "mn": {"1,0": 0.05, "1,1": 2.38, "1,20": 2.79, "20,1": 3.06, "20,20": 2.57},
    "start": {"warm": 2.79, "cold": 2.41},
    "eps": {},
}
TABLE22_CLEAN = {"lr": 92.35, "nn": 98.04, "cnn": 99.13}


def variants(table: str) -> list[tuple[str, dict, float]]:
    """(label, attack-option overrides, fraction) of each column of a table."""
    if table == "leader":
        return [(v, {"leader": v}, 0.03) for v in ("attacker", "defender")]
    if table == "formulation":
        return [(v, {"formulation": v}, 0.03) for v in ("nonzero_sum", "zero_sum")]
    if table == "pretrain":
        return [("true", {}, 0.03), ("false", {"pretrain.epochs": 0}, 0.03)]  # pretrain.epochs 0: no pretraining
    if table == "mn":
        return [(f"{m},{n}", {"m": m, "n": n}, 0.03) for m, n in ((1, 0), (1, 1), (1, 20), (20, 1), (20, 20))]
    if table == "start":
        return [(v, {"start": v}, 0.03) for v in ("warm", "cold")]
    if table == "eps":
        return [(f"{e:g}", {}, e) for e in (0.01, 0.03, 0.1, 0.3, 1.0)]
    return [("tgda", {}, 0.03)]


def _same_run_elsewhere(out: Path, model: str, attack: str, fraction: float, seed: int, dataset: str,
                        victim_epochs: int | None, opts: dict, model_opts: dict) -> dict | None:
    """A finished run with exactly this configuration in another table's result file, or None."""
    for f in sorted(out.parent.glob("tgda_mnist_*.json")):
        if f == out:
            continue
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("dataset") != dataset:
            continue
        for key, row in rec.get("runs", {}).items():
            ro = {k: v for k, v in (row.get("attack_options") or {}).items() if k != "checkpoint"}
            if (row.get("model") == model and row.get("attack") == attack and row.get("fraction") == fraction
                    and row.get("seed", 0) == seed and row.get("victim_epochs") == victim_epochs
                    and row.get("model_options") == model_opts and ro == _resolved(attack, opts)):
                return {**row, "_source": f"{f.name}:{key}"}
    return None


def _resolved(attack: str, opts: dict) -> dict:
    """The attack's full option dict (defaults filled in), as run records store it."""
    from poisonlab.attacks import build_attack

    return {k: v for k, v in build_attack(attack, opts).options().items() if k != "checkpoint"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=sorted(THESIS))
    p.add_argument("--models", default="lr", help="comma-separated victims (default lr)")
    p.add_argument("--attacks", default="tgda", help="table22 only: comma-separated attacks (e.g. tgda,label_flip,min_max)")
    p.add_argument("--quick", action="store_true", help="digits, 20 victim epochs, 2 attack epochs (plumbing check)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--victim-epochs", type=int, help="victim recipe epochs (default 100, the thesis)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="result JSON (default bench/results/tgda_mnist_<table>[_quick].json)")
    p.add_argument("--runs-dir", default="runs/bench_tgda", help="where each run's artifacts go")
    p.add_argument("--attack-option", "-A", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model-option", "-M", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="rerun runs already in the result file")
    args = p.parse_args(argv)

    extra = parse_key_values(args.attack_option, "attack option")
    model_opts = parse_key_values(args.model_option, "model option")
    dataset = "digits" if args.quick else "mnist"
    victim_epochs = args.victim_epochs if args.victim_epochs is not None else (20 if args.quick else None)
    if args.quick:
        extra = {"epochs": 2, "pretrain.epochs": 1, "solver.iters": 5, **extra}
    suffix = "_quick" if args.quick else ""
    out = Path(args.out or Path(__file__).parent / "results" / f"tgda_mnist_{args.table}{suffix}.json")
    record = json.loads(out.read_text()) if out.is_file() and not args.force else {}
    record.setdefault("runs", {})
    record.update({"table": args.table, "dataset": dataset, "thesis_drop": THESIS[args.table],
                   "machine": {"python": platform.python_version(), "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "cpus": os.cpu_count()}})
    attacks = args.attacks.split(",") if args.table == "table22" else ["tgda"]
    for model in args.models.split(","):
        for attack in attacks:
            for label, overrides, fraction in variants(args.table):
                key = f"{model}/{attack}/{label}"
                if key in record["runs"] and not args.force:
                    print(f"[bench] {key}: done before, skipped", file=sys.stderr)
                    continue
                opts = {**(extra if attack == "tgda" else {}), **overrides}
                same = _same_run_elsewhere(out, model, attack, fraction, args.seed, dataset, victim_epochs, opts, model_opts)
                if same is not None and not args.force:  # e.g. every table's baseline column is one run
                    record["runs"][key] = {**same, "variant": label, "reused_from": same.get("reused_from") or same["_source"]}
                    record["runs"][key].pop("_source", None)
                    write_json(out, record)
                    print(f"[bench] {key}: the same run is in {record['runs'][key]['reused_from']}, reused", file=sys.stderr)
                    continue
                cfg = RunSpec(dataset=dataset, model=model, attack=attack, fraction=fraction, seed=args.seed,
                                epochs=victim_epochs, data_dir=args.data_dir, device="cpu",
                                out=f"{args.runs_dir}/{args.table}{suffix}/{model}-{attack}-{label.replace(',', '_')}",
                                attack_options=opts, model_options=model_opts)
                t0 = time.perf_counter()
                r = run_protocol(cfg, progress=sys.stderr.isatty())
                info = r.attack_info
                row = {"model": model, "attack": attack, "variant": label, "fraction": fraction, "seed": args.seed,
                       "victim_epochs": victim_epochs,
                       "clean_accuracy": r.clean_accuracy, "poisoned_accuracy": r.poisoned_accuracy,
                       "accuracy_drop": r.accuracy_drop, "attack_seconds": r.attack_seconds,
                       "total_seconds": time.perf_counter() - t0,
                       "seconds_per_attack_epoch": info.get("seconds_per_epoch"),
                       "attack_options": r.attack_options, "recipe": r.config["recipe"],
                       "model_options": model_opts, "n_poison": r.n_poison,
                       "val_loss_trace": info.get("val_loss"), "artifacts": r.out}
                record["runs"][key] = row
                write_json(out, record)
                print(f"[bench] {key}: {row['clean_accuracy']:.2f} -> {row['poisoned_accuracy']:.2f} "
                      f"(drop {row['accuracy_drop']:.2f}, thesis {THESIS[args.table].get(label if args.table != 'table22' else model, '-')}), "
                      f"attack {row['attack_seconds']:.0f} s, total {row['total_seconds']:.0f} s", file=sys.stderr)
    print(json.dumps({k: round(v["accuracy_drop"], 2) for k, v in record["runs"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
