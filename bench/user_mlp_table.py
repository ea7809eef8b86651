"""Every attack on its defaults against a user's own MLP trained with Adam (issue #26, item 4).

    python bench/user_mlp_table.py                       # 3 seeds, ε = 10 %, every attack that applies
    python bench/user_mlp_table.py --seeds 0 --attacks label_flip tgda --out /tmp/mlp
    python bench/user_mlp_table.py --attacks tgda --option tgda.labels=flip --defenses none \
        --out runs/user_mlp_tgda_flip --json bench/results/user_mlp_tgda_flip.json

The victim is what a user would bring: a plain ``nn.Module`` no registry knows (two hidden layers of
64, ReLU), trained with Adam (lr 3e-3, 40 epochs, batch 128) on standardised tabular data —
scikit-learn's ``make_classification`` with 30 features (15 informative, 5 redundant), 3 classes,
3 000 points (2 400 train → D_tr 1 680 / D_v 720; 600 test), per-feature bounds the observed range
widened by 10 %. It goes through ``pl.evaluate`` exactly as a user's call would: every attack that
applies, on its defaults, over the seeds; the defenses against the two most damaging; the thresholds.

Writes the evaluation (``report.md``, ``report.json``, ``report.html``, ``results.jsonl``) into
``--out`` and a summary to ``bench/results/user_mlp_table.json`` (the per-attack drops per seed, the
TGDA safeguard counts, the environment). Rerunning the same command resumes from ``results.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import RESULTS, environment  # noqa: E402  (sets OMP_WAIT_POLICY)
from torch import nn  # noqa: E402

import poisonlab as pl  # noqa: E402
from poisonlab.artifacts import write_json  # noqa: E402
from poisonlab.cli.key_values import parse_key_values  # noqa: E402


class TabularMLP(nn.Module):
    """The user's network: (N, 30) standardised features to (N, 3) logits."""

    def __init__(self, d: int = 30, classes: int = 3, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tabular_data(seed: int = 0):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=30, n_informative=15, n_redundant=5, n_classes=3,
                               class_sep=1.0, random_state=seed)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    span = x.max(0) - x.min(0)
    bounds = (x.min(0) - 0.1 * span, x.max(0) + 0.1 * span)
    return pl.data_from_arrays(x[:2400], y[:2400], x[2400:], y[2400:], bounds=bounds, name="tabular30")


def _safeguards(out: str, attack: str) -> list | None:
    """TGDA's safeguard counts per seed (``attack_info["safeguards"]``) from the evaluation's rows."""
    if attack != "tgda":
        return None
    from poisonlab.sweeps.results import load_rows

    return [r["result"].get("attack_info", {}).get("safeguards") for r in load_rows(Path(out) / "results.jsonl")
            if r.get("status") == "ok" and r.get("config", {}).get("attack") == "tgda"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--attacks", nargs="*", default=None, help="default: every attack that applies")
    ap.add_argument("--option", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                    help="an option of one attack (repeatable; needs --attacks), e.g. tgda.labels=flip")
    ap.add_argument("--defenses", default="auto", help="auto, none or a comma-separated list")
    ap.add_argument("--out", default="runs/user_mlp_table")
    ap.add_argument("--json", default=str(RESULTS / "user_mlp_table.json"))
    args = ap.parse_args(argv)

    victim = pl.victim(TabularMLP, optimizer="adam", lr=3e-3, epochs=40, batch_size=128, device="cpu")
    defenses = None if args.defenses == "none" else ("auto" if args.defenses == "auto" else args.defenses.split(","))
    t0 = time.perf_counter()
    attacks = args.attacks or "auto"
    if args.option:
        if not args.attacks:
            ap.error("--option needs --attacks")
        attacks = {name: {} for name in args.attacks}
        for key, value in parse_key_values(args.option, "--option").items():  # the CLI's KEY=VALUE reader
            name, _, option = key.partition(".")
            if name not in attacks or not option:
                ap.error(f"--option {key}=...: write ATTACK.KEY=VALUE for an attack in --attacks")
            attacks[name][option] = value
    ev = pl.evaluate(tabular_data(), victim, args.fraction, attacks=attacks, defenses=defenses,
                     seeds=tuple(args.seeds), out=args.out, progress=True)
    seconds = time.perf_counter() - t0
    rows = {a.name: {"drops": a.accuracy_drop, "seeds": a.seeds, "failed": a.failed, "action": a.action,
                     **a.summary(), "tgda_safeguards": _safeguards(args.out, a.name)} for a in ev.attacks}
    write_json(Path(args.json), {"environment": environment(), "seconds": seconds, "fraction": args.fraction,
                                 "seeds": args.seeds, "options": args.option, "attacks": rows, "evaluation": ev.to_dict()})
    print(ev.to_markdown())
    print(f"\n{seconds:.0f} s; report: {args.out}/report.html; summary: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
