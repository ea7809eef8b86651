"""Defenses against every attack on MNIST (thesis Tables 2.10-2.11 shape).

For each model (default lr, nn) and attack (default label_flip; tgda / gc plug in by name once
registered) one protocol run crafts the poisons and measures the undefended drop; every defense
then judges that same run (``poisonlab.protocol.defend.defend_saved_run``: no re-crafting, no
re-pretraining) and the defended drop plus detection precision / recall / ROC-AUC are tabulated.

    python bench/defenses_mnist.py                       # MNIST, thesis recipe (100 epochs), slow on CPU
    python bench/defenses_mnist.py --quick               # digits, 3 epochs: checks the pipeline in ~1 min
    python bench/defenses_mnist.py --attacks label_flip,tgda,gc --models lr --defenses loss,influence,sever,maxup
    python bench/defenses_mnist.py -D sever:rounds=1 -M nn:hidden=[1000,1000] -A tgda:steps=200

Thesis reference (TGDA, MNIST, fraction 0.03, drop wo/w defense): LR loss 2.79/2.56,
influence 2.79/2.45, Sever 2.79/2.13, MaxUp 2.79/2.77; NN loss 1.50/1.49, influence 1.50/1.48,
Sever 1.50/1.32, MaxUp 1.50/1.50.
Writes ``<out>/defenses.json`` and ``<out>/defenses.md``; run directories under ``<out>/runs``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import common  # noqa: F401,E402  (OMP_WAIT_POLICY, ../shared/data default)
from tqdm.auto import tqdm

from poisonlab.cli.run_cmd import parse_key_values
from poisonlab.defenses import DEFENSES, build_defense
from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.protocol import RunSpec, prepare, run_protocol, write_json
from poisonlab.artifacts import write_atomic
from poisonlab.protocol.defend import defend_saved_run
from poisonlab.reporting import format_table

THESIS_TGDA = {  # (model, defense) -> (drop without, drop with), thesis Tables 2.10-2.11
    ("lr", "loss"): (2.79, 2.56), ("lr", "influence"): (2.79, 2.45), ("lr", "sever"): (2.79, 2.13), ("lr", "maxup"): (2.79, 2.77),
    ("nn", "loss"): (1.50, 1.49), ("nn", "influence"): (1.50, 1.48), ("nn", "sever"): (1.50, 1.32), ("nn", "maxup"): (1.50, 1.50),
}


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _scoped(items: list[str], names: list[str], what: str) -> dict[str, dict]:
    """``NAME:key=value`` options for one component, ``key=value`` for all of them."""
    out: dict[str, dict] = {n: {} for n in names}
    for item in items:
        head, sep, rest = item.partition("=")
        name, colon, key = head.rpartition(":")
        for n in ([name] if colon else names):
            if n not in out:
                raise ConfigError(f"{what} option {item!r}: {n!r} is not among {names}")
            out[n].update(parse_key_values([f"{key}{sep}{rest}"], f"{what} option"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits, 3 epochs, small nn: a pipeline check, not a result")
    p.add_argument("--dataset", default=None, help="default mnist (digits with --quick)")
    p.add_argument("--models", default="lr,nn")
    p.add_argument("--attacks", default="label_flip")
    p.add_argument("--defenses", default=",".join(DEFENSES.names()))
    p.add_argument("--fraction", type=float, default=0.03)
    p.add_argument("--epochs", type=int, default=None, help="default 100 (3 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="default bench/results/defenses_mnist[_quick]")
    p.add_argument("-A", "--attack-option", action="append", default=[], metavar="[ATTACK:]KEY=VALUE")
    p.add_argument("-M", "--model-option", action="append", default=[], metavar="[MODEL:]KEY=VALUE")
    p.add_argument("-D", "--defense-option", action="append", default=[], metavar="[DEFENSE:]KEY=VALUE")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except PoisonlabError as exc:
        print(f"defenses_mnist: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    models, attacks, defenses = _split(args.models), _split(args.attacks), _split(args.defenses)
    dataset = args.dataset or ("digits" if args.quick else "mnist")
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 100)
    out = Path(args.out or ("bench/results/defenses_mnist_quick" if args.quick else "bench/results/defenses_mnist"))
    a_opts = _scoped(args.attack_option, attacks, "attack")
    m_opts = _scoped(args.model_option, models, "model")
    if args.quick and "nn" in m_opts and "hidden" not in m_opts["nn"]:
        m_opts["nn"]["hidden"] = [64, 64]
    d_opts = _scoped(args.defense_option, defenses, "defense")
    built = {d: build_defense(d, {"fraction": args.fraction, **d_opts[d]}) for d in defenses}  # validate first
    rows: list[dict] = []
    t0 = time.perf_counter()
    for model in models:
        for attack in attacks:
            cfg = RunSpec(dataset=dataset, model=model, attack=attack, fraction=args.fraction, seed=args.seed,
                            epochs=epochs, device=args.device, data_dir=args.data_dir, model_options=m_opts[model],
                            attack_options=a_opts[attack], out=str(out / "runs" / f"{model}-{attack}"))
            print(f"== {dataset} / {model} / {attack}: crafting and retraining once", flush=True)
            base = run_protocol(cfg, progress=True)
            prep = prepare(cfg)  # the same deterministic split, loaded once for every defense
            for name in tqdm(defenses, desc=f"{model}/{attack} defenses", unit="defense"):
                rec = defend_saved_run(cfg.out, built[name], out=Path(cfg.out) / "defenses" / name,
                                       prepared=prep, progress=True)
                rows.append({
                    "model": model, "attack": attack, "defense": name,
                    "clean_accuracy": base.clean_accuracy, "drop_without": base.accuracy_drop,
                    "drop_with": rec.defended_drop, "defended_accuracy": rec.defended_accuracy,
                    "precision": rec.precision, "recall": rec.recall, "roc_auc": rec.roc_auc,
                    "n_removed": rec.n_removed, "n_poison_removed": rec.n_poison_removed,
                    "n_poison": base.n_poison, "defense_seconds": rec.seconds,
                    "thesis_tgda": THESIS_TGDA.get((model, name)) if attack == "tgda" and dataset == "mnist" else None,
                })
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    table = format_table(
        ("model", "attack", "defense", "acc1", "drop wo / w", "precision", "recall", "ROC-AUC", "removed (poisons)", "s",
         "thesis TGDA wo / w"),
        [(r["model"], r["attack"], r["defense"], f"{r['clean_accuracy']:.2f}", f"{r['drop_without']:.2f} / {r['drop_with']:.2f}",
          fmt(r["precision"]), fmt(r["recall"]), fmt(r["roc_auc"]), f"{r['n_removed']} ({r['n_poison_removed']})",
          f"{r['defense_seconds']:.1f}", "-" if not r["thesis_tgda"] else "%.2f / %.2f" % tuple(r["thesis_tgda"]))
         for r in rows],
    )
    header = (f"# Defenses on {dataset} (fraction {args.fraction:g}, {epochs} epochs, seed {args.seed})\n\n"
              f"command: python bench/defenses_mnist.py {' '.join(sys.argv[1:])}\n\n")
    write_atomic(out / "defenses.md", (header + "```\n" + table + "\n```\n").encode())
    write_json(out / "defenses.json", {"dataset": dataset, "epochs": epochs, "fraction": args.fraction, "seed": args.seed,
                                       "rows": rows, "total_seconds": time.perf_counter() - t0})
    print(table)
    print(f"\n{len(rows)} rows in {time.perf_counter() - t0:.0f} s; written to {out}/defenses.md and defenses.json")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
