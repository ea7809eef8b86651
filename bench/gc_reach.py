"""Does Gradient Canceling reach every target that passes the necessary conditions? (MNIST, LR)

    python bench/gc_reach.py                 # MNIST LR: "reachable" targets at ε = 0.03, 0.1 and GradPC targets
    python bench/gc_reach.py --quick         # digits, 5 victim epochs: a smoke test (writes to a temporary directory)

Issue #16, item 3, restated goal: for a target with τ_gauge ≤ 0.8·ε (the box gauge, a necessary
condition for pixels in [0, 1]: ``poisonlab.theory.box``), GC at ε leaves a relative gradient norm
(‖g(D_tr ∪ D_p)‖ / ‖g(μ)‖ at the target, the *residual*) ≤ 0.05, and the victim retrained from scratch
with its recipe on D_tr ∪ D_p agrees with the target on ≥ 97 % of the test points.

Targets: (a) the ``"reachable"`` maker (``poisonlab.attacks.reachable_target``: the most damaging
target found with τ_gauge ≤ limit·ε, limit 0.8) for each ``--fractions`` value ε, GC at that ε;
(b) GradPC targets of radius ``--eps-w``, GC at ε = τ_gauge / share (rounded up) for each ``--shares``
value (default 0.8, so τ_gauge ≤ 0.8·ε; ``--shares 0.8 0.5 0.3`` asks where a target GC misses at 0.8
becomes reachable).
GC runs with plan labels (``init: plan``), ``--gc-steps`` Adam steps of ``--gc-lr``; with
``--gc-defaults`` every target is also attacked with gc's default options (random labels, 300 steps
of 0.02), to show what the options buy.

Results: bench/results/gc_reach.json (rewritten after every row); the ε = 0.03 "reachable" target
is saved beside it (gc_reach_target.safetensors) for bench/gc_phase_mnist.py and table_2_2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, clean_victim, environment, quick_setup  # noqa: E402  (sets OMP_WAIT_POLICY, the data default)

import torch  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.attacks.gc import sum_gradient  # noqa: E402
from poisonlab.attacks.targets import TargetContext, load_target, make_target  # noqa: E402
from poisonlab.autodiff import named_params  # noqa: E402
from poisonlab.cache import as_cache  # noqa: E402
from poisonlab.data import PoisonedDataset  # noqa: E402
from poisonlab.protocol import RunSpec, save_model, write_json  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.training import accuracy, mean_loss  # noqa: E402

RESIDUAL_GOAL, AGREEMENT_GOAL, GAUGE_SHARE = 0.05, 97.0, 0.8
GC_OPTIONS = {"init": "plan", "steps": 600, "lr": 0.05}


def gc_and_retrain(data, victim, test, clean_accuracy: float, target_path: Path, fraction: float, gc_options: dict,
                   seed: int = 0) -> dict:
    """GC at ``fraction`` aimed at the saved target, then the victim retrained from scratch on D_tr ∪ D_p:
    the residual, the agreement with the target, the accuracy and the seconds of each stage."""
    attack = build_attack("gc", {**gc_options, "target": str(target_path)})
    ta = time.perf_counter()
    ps = attack.poison(data, victim, fraction, generator=torch_generator(seed, "attack"))
    t_gc = time.perf_counter() - ta
    tr = time.perf_counter()
    retrained = victim.retrain(PoisonedDataset.combine(data.train, ps).dataset)
    t_retrain = time.perf_counter() - tr
    acc2 = accuracy(retrained, test)
    rep = attack.assess(ps, retrained, test)
    i = ps.info
    # where did retraining stop? the mixed loss and its gradient norm at the retrained model and at the target
    mixed = PoisonedDataset.combine(data.train, ps).dataset
    target = load_target(target_path, retrained)
    diag = {}
    for name, m in (("target", target), ("retrained", retrained)):
        names, w = named_params(m)
        diag[f"mixed_loss_{name}"] = float(mean_loss(m, mixed))
        g = sum_gradient(m, names, w, mixed.x, mixed.y, 1.0 / len(mixed), 8192)
        diag[f"mixed_grad_norm_{name}"] = float(torch.linalg.vector_norm(g))
    passes = i["tau_gauge"] is not None and i["tau_gauge"] <= GAUGE_SHARE * i["eps"]
    return {"fraction": fraction, "n_poison": len(ps.y), "eps": i["eps"], "tau": i["tau"], "tau_box": i["tau_box"],
            "tau_gauge": i["tau_gauge"], "gauge_share": i["tau_gauge"] / i["eps"] if i["tau_gauge"] is not None else None,
            "target_test_accuracy": rep["target_test_accuracy"], "poisoned_accuracy": acc2,
            "accuracy_drop": clean_accuracy - acc2, "residual": i["final_rel_grad_norm"],
            "initial_residual": i["initial_rel_grad_norm"], "steps_run": i["steps_run"],
            "agreement": rep["retrained_target_agreement"], "logit_distance": rep["retrained_to_target_logit_distance"],
            "param_distance_retrained": rep["retrained_to_target_distance"], "param_distance_clean": i["clean_to_target_distance"],
            "gc_options": {k: v for k, v in gc_options.items()}, "gc_seconds": t_gc, "retrain_seconds": t_retrain,
            "passes_gauge_share": passes, **diag,
            "goal_met": bool(passes and i["final_rel_grad_norm"] <= RESIDUAL_GOAL and rep["retrained_target_agreement"] >= AGREEMENT_GOAL)}


def reachable_target(data, victim, fraction: float, cache_dir: str | None, options: dict | None = None):
    """The "reachable" maker's target for ε = ``fraction`` (through the artifact cache): (model, info, seconds)."""
    t0 = time.perf_counter()
    model, info = make_target("reachable", victim.clean_model(), data.val, dict(options or {}), False,
                              cache=as_cache(cache_dir), context=TargetContext(data.train, data.bounds, fraction))
    return model, info, time.perf_counter() - t0


def lr_setup(args, dataset: str, epochs: int | None):
    """The clean LR victim of ``--seed`` (through ``--cache-dir``), its test set and accuracy, and GC's
    options with ``--gc-steps`` / ``--gc-lr``: the setup gc_reach and gc_phase_mnist share."""
    cache_dir = args.cache_dir or None
    prep, clean, victim = clean_victim(RunSpec(dataset=dataset, model="lr", seed=args.seed, epochs=epochs,
                                                 data_dir=args.data_dir, cache_dir=cache_dir))
    test = prep.test
    return prep, victim, test, accuracy(clean, test), {**GC_OPTIONS, "steps": args.gc_steps, "lr": args.gc_lr}, cache_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.03, 0.1],
                    help="ε of the 'reachable' targets (default 0.03 0.1)")
    ap.add_argument("--eps-w", type=float, nargs="*", default=[0.02, 0.05], help="GradPC targets (default 0.02 0.05)")
    ap.add_argument("--shares", type=float, nargs="*", default=[GAUGE_SHARE],
                    help="GradPC targets: GC at ε = τ_gauge / share for each share (default 0.8, the goal's; "
                         "smaller shares give GC more poisons than the gauge needs)")
    ap.add_argument("--gc-steps", type=int, default=GC_OPTIONS["steps"])
    ap.add_argument("--gc-lr", type=float, default=GC_OPTIONS["lr"])
    ap.add_argument("--gc-defaults", action="store_true", help="also attack each target with gc's default options")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default="runs/bench_gc/cache", help="clean victim and targets ('' for none)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the rows of the existing --out whose targets are not rerun")
    ap.add_argument("--out", default=str(RESULTS / "gc_reach.json"))
    args = ap.parse_args(argv)
    dataset, epochs, out, smoke = quick_setup(args, "gc_reach")
    if args.quick:
        args.fractions, args.eps_w, args.gc_steps = [0.5], [0.02], min(args.gc_steps, 100)
    t0 = time.perf_counter()
    prep, victim, test, acc1, gc_opts, cache_dir = lr_setup(args, dataset, epochs)
    data = prep.attack_data()
    report = {"environment": environment(), "dataset": dataset, "model": "lr", "seed": args.seed,
              "clean_accuracy": acc1, "goal": {"gauge_share": GAUGE_SHARE, "residual": RESIDUAL_GOAL, "agreement": AGREEMENT_GOAL},
              "gc_options": gc_opts, "rows": []}
    if args.keep and out.is_file():
        rerun = {f"reachable ε={f:g}" for f in args.fractions} | {f"gradpc ε_w={e:g}" for e in args.eps_w}
        report["rows"] = [{**r, "kept_from": r.get("kept_from", "an earlier run")}
                          for r in json.loads(out.read_text())["rows"] if r["target"] not in rerun]
    tmp = Path(tempfile.mkdtemp(prefix="gc_reach-"))

    def record(row: dict) -> None:
        report["rows"].append(row)
        report["seconds"] = time.perf_counter() - t0
        report["goal_met_everywhere"] = all(r["goal_met"] for r in report["rows"] if r["passes_gauge_share"] and r["gc_options"] == gc_opts)
        write_json(out, report)
        print(f"{row['target']:>22s} [{row['gc_options'].get('init', 'random')}] ε={row['eps']:.4g}: target "
              f"{row['target_test_accuracy']:.2f} %, τ_gauge/ε={row['gauge_share']:.3f} | {acc1:.2f} → "
              f"{row['poisoned_accuracy']:.2f} (drop {row['accuracy_drop']:.2f}), residual {row['residual']:.4f}, "
              f"agreement {row['agreement']:.2f} %, GC {row['gc_seconds']:.1f} s, retrain {row['retrain_seconds']:.1f} s "
              f"-> goal {'met' if row['goal_met'] else 'NOT met'}", file=sys.stderr, flush=True)

    def attack_all(name: str, path: Path, fraction: float, extra: dict) -> None:
        record({"target": name, **extra, **gc_and_retrain(data, victim, test, acc1, path, fraction, gc_opts, args.seed)})
        if args.gc_defaults:
            record({"target": name, **extra, **gc_and_retrain(data, victim, test, acc1, path, fraction, {}, args.seed)})

    for f in args.fractions:
        model, info, secs = reachable_target(data, victim, f, cache_dir)
        path = tmp / f"reachable_{f:g}.safetensors"
        save_model(path, model, {"model": "lr", "stage": "target:reachable", "fraction": str(f)})
        if math.isclose(f, 0.03) and not smoke:
            save_model(out.with_name(f"{out.stem}_target.safetensors"), model,
                       {"model": "lr", "stage": "target:reachable", "fraction": str(f)})
        extra = {"maker": {k: info[k] for k in ("tau_gauge", "tau_gauge_clean", "best_step", "val_accuracy_clean",
                                                   "val_accuracy_target", "relative_change", "lp_seconds", "seconds",
                                                   "limit", "steps", "step", "band")},
                 "maker_seconds_here": secs, "maker_cache": info.get("cache")}
        attack_all(f"reachable ε={f:g}", path, f, extra)
    for e in args.eps_w:
        model, info = make_target("gradpc", victim.clean_model(), data.val, {"eps_w": e}, False, cache=as_cache(cache_dir))
        path = tmp / f"gradpc_{e:g}.safetensors"
        save_model(path, model, {"model": "lr", "stage": "target:gradpc", "eps_w": str(e)})
        from poisonlab.protocol.reachability import threshold_report

        tau_gauge = threshold_report(model, prep).tau_gauge
        for share in args.shares:
            f = math.ceil(tau_gauge / share * 1000) / 1000  # τ_gauge ≤ share·ε
            if f > 1:
                print(f"gradpc ε_w={e:g}: share {share:g} needs ε = {f:g} > 1, skipped", file=sys.stderr)
                continue
            attack_all(f"gradpc ε_w={e:g}", path, f, {"eps_w": e, "share_asked": share})
    report["seconds"] = time.perf_counter() - t0
    write_json(out, report)
    print(f"wrote {out} ({report['seconds']:.0f} s); goal met on every target that passes: {report['goal_met_everywhere']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sys.exit(main())
