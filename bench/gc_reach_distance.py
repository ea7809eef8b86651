"""Does the victim retrained on GC's poisons end closer to the reachable target than the clean victim? (MNIST LR)

    python bench/gc_reach_distance.py --cache-dir /tmp/gc_cache          # seed 0, the GC settings below
    python bench/gc_reach_distance.py --quick                             # digits, a smoke test

Issue #25, item 4: gc on ``--target reachable`` must leave a residual ≤ 0.05, an agreement ≥ 97 % and a
retrained model closer to the target than the clean model. "Closer" is measured two ways here, for
the clean and for the retrained victim: the relative parameter distance ‖w − w_target‖ / ‖w_target‖
(what ``gc``'s ``assess`` reports as ``retrained_to_target_distance`` / ``clean_to_target_distance``)
and the function-space distance on the test set (relative distance of the class-centred logits,
agreement of the predictions, KL(target ‖ model)). Each row is one GC setting (``--settings``, a JSON
list of gc options) aimed at the same "reachable" target (made for ε = ``--fraction``, cached), followed
by a retrain from scratch with the victim's recipe.

``--offset-clean`` adds, for each setting, a diagnostic row outside the library: GC cancels
g(μ)(w_target) − g(μ)(w_clean) instead of g(μ)(w_target), i.e. it makes the mixed gradient at the target
equal to the clean gradient that the recipe leaves at the clean victim (a first-order model of "the
recipe stops as far short of the target on D_tr ∪ D_p as it stops short on D_tr"). Its residual
column is relative to that offset gradient.

Results: bench/results/gc_reach_distance.json (rewritten after every row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, quick_setup  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)
from gc_reach import gc_and_retrain, lr_setup, reachable_target  # noqa: E402

import torch  # noqa: E402

import poisonlab.attacks.gc as gc_module  # noqa: E402
from poisonlab.autodiff import named_params  # noqa: E402
from poisonlab.protocol import save_model, write_json  # noqa: E402
from poisonlab.training import predict_logits  # noqa: E402

SETTINGS = [{"init": "plan", "steps": 600, "lr": 0.05}, {"init": "plan", "steps": 1500, "lr": 0.02},
            {"init": "plan", "steps": 1200, "lr": 0.05}]


#: the columns kept from bench/gc_reach.py's gc_and_retrain
KEYS = ("residual", "agreement", "logit_distance", "poisoned_accuracy", "accuracy_drop", "steps_run", "gc_seconds",
        "retrain_seconds", "mixed_loss_target", "mixed_loss_retrained", "mixed_grad_norm_target",
        "mixed_grad_norm_retrained", "param_distance_retrained", "param_distance_clean")


def function_distance(model, target, test) -> dict:
    """Test-set distances of ``model`` to ``target``: centred-logit distance, agreement %, KL(target ‖ model)."""
    hm, ht = predict_logits(model, test.x).double(), predict_logits(target, test.x).double()
    cm, ct = hm - hm.mean(1, keepdim=True), ht - ht.mean(1, keepdim=True)
    lt, lm = torch.log_softmax(ht, 1), torch.log_softmax(hm, 1)
    return {"logit_distance": float((cm - ct).norm() / ct.norm().clamp_min(1e-30)),
            "agreement": 100.0 * float((hm.argmax(1) == ht.argmax(1)).double().mean()),
            "kl_target_model": float((lt.exp() * (lt - lm)).sum(1).mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("--settings", type=json.loads, default=SETTINGS, help="JSON list of gc option mappings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default="runs/bench_gc/cache", help="clean victim and target ('' for none)")
    ap.add_argument("--offset-clean", action="store_true", help="also the diagnostic offset rows (see the docstring)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "gc_reach_distance.json"))
    args = ap.parse_args(argv)
    args.gc_steps, args.gc_lr = 600, 0.05  # lr_setup's GC options (unused: each row gives its own)
    dataset, epochs, out, _ = quick_setup(args, "gc_reach_distance")
    t0 = time.perf_counter()
    prep, victim, test, acc1, _, cache_dir = lr_setup(args, dataset, epochs)
    data = prep.attack_data()
    target, info, maker_s = reachable_target(data, victim, args.fraction, cache_dir)
    path = Path(tempfile.mkdtemp(prefix="gc_reach_distance-")) / "target.safetensors"
    save_model(path, target, {"model": "lr", "stage": "target:reachable", "fraction": str(args.fraction)})
    clean = victim.clean_model()
    report = {"environment": environment(), "dataset": dataset, "model": "lr", "seed": args.seed, "fraction": args.fraction,
              "clean_accuracy": acc1, "maker": {k: info[k] for k in ("tau_gauge", "relative_change", "best_step")},
              "maker_seconds_here": maker_s, "maker_cache": info.get("cache"),
              "clean_to_target": function_distance(clean, target, test), "rows": []}
    names, w_clean = named_params(clean)
    N = len(data.train)
    g_at_clean = gc_module.sum_gradient(clean, names, w_clean, data.train.x, data.train.y, 1.0 / N, 8192)
    original = gc_module.sum_gradient

    def offset_sum_gradient(model, nm, w, x, y, scale, chunk):  # g(μ) at the target minus g(μ) at the clean victim
        g = original(model, nm, w, x, y, scale, chunk)
        return g - g_at_clean.to(g) if len(x) == N else g

    runs = [(o, False) for o in args.settings] + ([(o, True) for o in args.settings] if args.offset_clean else [])
    for opts, offset in runs:
        gc_module.sum_gradient = offset_sum_gradient if offset else original  # type: ignore[assignment]
        try:
            row = gc_and_retrain(data, victim, test, acc1, path, args.fraction, dict(opts), args.seed)
        finally:
            gc_module.sum_gradient = original  # type: ignore[assignment]
        row = {"gc_options": opts, "offset_clean": offset, **{k: row[k] for k in KEYS}}
        report["rows"].append(row)
        report["seconds"] = time.perf_counter() - t0
        write_json(out, report)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"wrote {out} ({report['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sys.exit(main())
