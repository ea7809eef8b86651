"""Tutorial: poison *your own* model on *your own* data with poisonlab's public API.

A user-defined MLP (a plain ``nn.Module`` that no registry knows) on standardised tabular data
(scikit-learn's ``make_classification``, per-feature bounds that are not [0, 1]). Every step goes
through the public API:

1. ``pl.data_from_arrays`` — numpy arrays in, checked, split 70 / 30 into D_tr / D_v (+ a test set);
2. ``pl.victim`` — the module factory and its training recipe (Adam here);
3. ``pl.run`` — the protocol (train → attack → retrain from scratch) for label flip, Gradient
   Canceling and TGDA, at 3 % poison;
4. ``pl.defend`` — how well a defense finds the poisons (precision / recall / ROC-AUC);
5. ``pl.threshold`` — how much poison a target model needs, without crafting any;
6. ``pl.evaluate`` — all of it as one call: several attacks over two seeds priced and fitted into a
   time budget, the worst case, the defenses against the two most damaging attacks, the theory's
   thresholds, and a report (``runs/own_model_evaluate/report.html``).

Run it (78 s measured on a shared 2-core CPU, 58 s of it the evaluation)::

    python examples/own_model.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.datasets import make_classification
from torch import nn

import poisonlab as pl


class TabularMLP(nn.Module):
    """Your network: any module mapping (N, d) features to (N, classes) logits."""

    def __init__(self, d: int = 20, classes: int = 3, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_data(seed: int = 0):
    """Standardised tabular data; bounds = each feature's observed range, widened by 10 %."""
    x, y = make_classification(n_samples=3000, n_features=20, n_informative=10, n_redundant=4, n_classes=3,
                               class_sep=1.2, random_state=seed)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    span = x.max(0) - x.min(0)
    bounds = (x.min(0) - 0.1 * span, x.max(0) + 0.1 * span)  # per-feature (20,) arrays
    return pl.data_from_arrays(x[:2400], y[:2400], x[2400:], y[2400:], bounds=bounds, name="tabular")


def main() -> None:
    t0 = time.perf_counter()
    data = make_data()
    print(data)
    victim = pl.victim(TabularMLP, optimizer="adam", lr=3e-3, epochs=40, batch_size=128)

    # the protocol, three attacks at 3 % of D_tr
    attacks = {
        "label_flip": {},
        "gc": {"target_options.eps_w": 0.5, "steps": 200},  # option groups take dotted keys (or nested dicts)
        "tgda": {"epochs": 10, "pretrain.epochs": 20, "solver.normal_equations": True},  # an MLP's Hessian is indefinite
    }
    rows = []
    for name, options in attacks.items():
        r = pl.run(data, victim, name, fraction=0.03, options=options, progress=False)
        rows.append((name, r.n_poison, r.clean_accuracy, r.poisoned_accuracy, r.accuracy_drop, r.attack_seconds))

    # a defense judged on the label-flip poisons
    poisons = pl.poison(data, victim, "label_flip", fraction=0.03, progress=False)
    report = pl.defend(data, poisons, victim, "loss", options={"fraction": 0.03})

    # how much poison would a GradPC target need? (no poisons crafted)
    tau = pl.threshold(data, victim, "gradpc", fraction=0.03, options={"eps_w": 0.5})

    print()
    print(f"{'attack':<12} {'poisons':>7} {'acc1 %':>7} {'acc2 %':>7} {'drop':>6} {'attack s':>9}")
    for name, n, a1, a2, drop, secs in rows:
        print(f"{name:<12} {n:>7d} {a1:>7.2f} {a2:>7.2f} {drop:>6.2f} {secs:>9.1f}")
    print()
    print(f"defense 'loss' on the label-flip poisons: precision {report.precision:.2f}, recall {report.recall:.2f}, "
          f"ROC-AUC {report.roc_auc:.3f} (removed {report.n_removed}, of them {report.n_poison_removed} poisons)")
    passes = "passes" if tau.fraction_passes else "fails"
    print(f"GradPC target (eps_w 0.5): tau = {tau.tau:.4g} poisons per clean point, at least "
          f"{tau.min_poisons} poisons; fraction 0.03 {passes} this necessary condition "
          f"(box gauge: {tau.box_not_applicable or tau.tau_gauge})")
    print(f"\nsteps 1-5: {time.perf_counter() - t0:.0f} s")

    # all of the above as one evaluation, fitted into a time budget (what does not fit is shortened or
    # skipped, and the report says so); the cells run in this process, so a local class is fine
    t1 = time.perf_counter()
    ev = pl.evaluate(data, victim, 0.03, attacks={"label_flip": {}, "min_max": {}, "gc": {"steps": 200},
                                                  "gradient_matching": {}},
                     defenses=["loss", "knn", "sphere"], seeds=(0, 1), time_budget=90, out="runs/own_model_evaluate",
                     progress=False)
    print()
    print(ev.to_markdown().split("\n## Worst case")[0])
    print(f"report: runs/own_model_evaluate/report.html; evaluate {time.perf_counter() - t1:.0f} s, "
          f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
