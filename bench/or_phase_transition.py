"""Thesis Figure 3.1: the reachability phase transition of logistic regression on the OR data set.

    python bench/or_phase_transition.py            # full figure (about a minute on one core)
    python bench/or_phase_transition.py --quick    # coarse grid, few ε (seconds)

Left: τ (eq. 3.4, poisons per clean point) over a grid of target models w = (w1, w2) (bias fixed),
all with 0 % test accuracy. Middle: test accuracy after Gradient Canceling + retraining from scratch
(full-batch gradient descent, so it converges) vs ε for one target: 100 % while ε < τ. Pixels are
kept in [0, 1], which raises the threshold to τ_box (Corollary 1 with a from the bounded domain);
both lines are drawn. Right: the target's gradient norm over the
mixed data vs ε (Definition 1: zero iff the target is stationary). Writes
bench/results/or_phase_transition.{png,json}. Uses the protocol's pieces: the 70/30 split, the
victim spec and its one training loop, the budget rule, the ``gc`` attack and :mod:`poisonlab.theory`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from poisonlab.attacks import build_attack  # noqa: E402
from poisonlab.data import PoisonedDataset, poison_count  # noqa: E402
from poisonlab.protocol import RunSpec, prepare, save_model, write_json  # noqa: E402
from poisonlab.reporting.plots import new_figure, save_figure  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.theory import binary_reachability, margin_statistic, multiclass_reachability  # noqa: E402
from poisonlab.training import Victim, accuracy, predict_logits  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def set_target(model: torch.nn.Module, w1: float, w2: float, bias: float) -> torch.nn.Module:
    """Two-class LR with logit difference z = w1·x1 + w2·x2 + bias (class-0 row zero)."""
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[0.0, 0.0], [w1, w2]]))
        model.linear.bias.copy_(torch.tensor([0.0, bias]))
    return model.eval()


def z_params(model: torch.nn.Module) -> torch.Tensor:
    """The identifiable parameters (w1, w2, b) of a two-class softmax LR: logit differences."""
    W, b = model.linear.weight.detach(), model.linear.bias.detach()
    return torch.cat([W[1] - W[0], (b[1] - b[0]).view(1)])


def label_mix(target: torch.nn.Module, g_clean: torch.Tensor, eps: float, grid: int = 41) -> tuple[float, float]:
    """The poison label mix of the best poisoning *distribution* on [0, 1]² (Theorem 1 as an LP):
    minimise ‖g(μ) + ε·Σ_i ν_i ∇ℓ(z_i)‖₁ over distributions ν on a grid × {0, 1}. Returns
    (share of label 0, residual); GC then starts from clean points in these proportions."""
    from scipy.optimize import linprog

    ax = torch.linspace(0, 1, grid)
    xy = torch.stack(torch.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2)
    xs = torch.cat([xy, xy]).view(-1, 1, 1, 2)
    ys = torch.cat([torch.zeros(len(xy)), torch.ones(len(xy))]).long()
    with torch.no_grad():
        r = torch.softmax(target(xs), 1) - torch.nn.functional.one_hot(ys, 2).float()
    G = torch.cat([(r[:, :, None] * xs.view(-1, 1, 2)).reshape(len(xs), -1), r], 1).double().numpy()  # (M, 6)
    m, d = G.shape
    c = np.concatenate([np.zeros(m), np.ones(2 * d)])
    A_eq = np.vstack([np.hstack([eps * G.T, np.eye(d), -np.eye(d)]), np.concatenate([np.ones(m), np.zeros(2 * d)])[None]])
    b_eq = np.concatenate([-g_clean.double().numpy(), [1.0]])
    res = linprog(c, A_eq=A_eq, b_eq=b_eq, bounds=[(0, None)] * (m + 2 * d), method="highs")
    nu = res.x[:m]
    return min(max(float(nu[: len(xy)].sum()), 0.0), 1.0), float(res.fun)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="coarse grid and few ε values (a smoke test)")
    ap.add_argument("--bias", type=float, default=0.1, help="fixed target bias (default 0.1: the origin is misclassified)")
    ap.add_argument("--target", type=float, nargs=2, default=(-0.25, -0.3), metavar=("W1", "W2"),
                    help="the target of the middle/right panels (default -0.25 -0.3)")
    ap.add_argument("--epochs", type=int, default=3000, help="retraining epochs (default 3000)")
    ap.add_argument("--lr", type=float, default=2.0, help="retraining learning rate (default 2)")
    ap.add_argument("--batch-size", type=int, default=1000,
                    help="retraining batch (default 1000 ≥ |D_tr ∪ D_p|: full-batch gradient descent, so retraining "
                         "converges to the stationary point the theory talks about)")
    ap.add_argument("--gc-steps", type=int, default=1500, help="GC steps (default 1500)")
    ap.add_argument("--gc-lr", type=float, default=0.02, help="GC Adam step in pixel units (default 0.02)")
    ap.add_argument("--source-classes", type=int, nargs="*", default=None,
                    help="classes the clean-label poisons start from (default: the label mix of the best poisoning "
                         "distribution, found by an LP over [0, 1]² × labels for each ε)")
    ap.add_argument("--out", default=str(RESULTS / "or_phase_transition"), help="output path without extension")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    prep, spec = prepare(RunSpec(dataset="or", model="lr", epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=0))
    data, test = prep.attack_data(), prep.test
    train = data.train
    clean = spec.train(train, 0)
    acc_clean = accuracy(clean, test)
    victim = Victim(spec, 0, {k: v.clone() for k, v in clean.state_dict().items()})
    print(f"OR: |D_tr|={len(train)}, clean test accuracy {acc_clean:.1f} %", file=sys.stderr)

    # ---- left: τ over a grid of 0-accuracy targets
    n = 9 if args.quick else 41
    w1s = np.linspace(-0.8, -0.12, n)
    w2s = np.linspace(-0.8, -0.12, n)
    tau = np.full((n, n), np.nan)
    probe = spec.build(0)
    ysign = (2 * train.y - 1).double()
    for i, w2 in enumerate(w2s):
        for j, w1 in enumerate(w1s):
            m = set_target(probe, float(w1), float(w2), args.bias)
            if accuracy(m, test) > 0.0:
                continue
            logits = predict_logits(m, train.x)
            r = multiclass_reachability(logits, train.y)
            rb = binary_reachability(margin_statistic(ysign * (logits[:, 1] - logits[:, 0]).double()))
            assert abs(r.tau - rb.tau) <= 1e-9 * max(1.0, r.tau)  # c = 2 cross-entropy == eq. 3.4
            tau[i, j] = r.tau

    # ---- middle / right: GC + retraining vs ε for one target
    target = set_target(spec.build(0), *args.target, args.bias)
    logits_t = predict_logits(target, train.x)
    reach = multiclass_reachability(logits_t, train.y)
    tau_star = reach.tau
    # pixels in [0, 1]: the margins t = ỹ·(w·x + b) admissible for each label (Corollary 1, bounded domain)
    wv = (target.linear.weight[1] - target.linear.weight[0]).detach()
    bv = float((target.linear.bias[1] - target.linear.bias[0]).detach())
    lo_wx, hi_wx = float(wv.clamp(max=0).sum()), float(wv.clamp(min=0).sum())
    domain = [(-(hi_wx + bv), -(lo_wx + bv)), (lo_wx + bv, hi_wx + bv)]  # label 0, label 1
    reach_box = binary_reachability(reach.inner, "logistic", domain)
    tau_box = reach_box.tau
    print(f"target w=({args.target[0]}, {args.target[1]}), b={args.bias}: accuracy {accuracy(target, test):.1f} %, "
          f"τ = {tau_star:.4f} (ε ≥ τ needed; min poisons {int(np.ceil(tau_star * len(train)))}); with pixels in [0, 1]: "
          f"τ_box = {tau_box:.4f} (a = {reach_box.a:.4f} instead of −W(1/e))", file=sys.stderr)
    eps_grid = [0.05, 0.4, 0.8, 1.0] if args.quick else [round(e, 3) for e in np.linspace(0.05, 1.0, 20)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "target.safetensors"
        save_model(path, target)
        from poisonlab.attacks.gc import sum_gradient
        from poisonlab.autodiff import named_params

        names, wt = named_params(target)
        g_clean = sum_gradient(target, names, wt, train.x, train.y, 1.0 / len(train), 10_000)
        gc_opts = {"target": str(path), "steps": 300 if args.quick else args.gc_steps, "lr": args.gc_lr,
                   "tol": 1e-4, "trace_every": 50}
        for eps in eps_grid:
            k = poison_count(eps, len(train))
            if args.source_classes is not None:
                q0, lp_res = float("nan"), float("nan")
                attack = build_attack("gc", {**gc_opts, "source_classes": list(args.source_classes)})
            else:
                q0, lp_res = label_mix(target, g_clean, k / len(train))
                attack = build_attack("gc", {**gc_opts, "class_proportions": [q0, 1.0 - q0]})
            ps = attack.poison(data, victim, eps, generator=torch_generator(0, "attack"))
            retrained = victim.retrain(PoisonedDataset.combine(train, ps).dataset)
            rep = attack.assess(ps, retrained, test)
            row = {"fraction": eps, "n_poison": k, "eps": ps.info["eps"], "label0_share": q0, "lp_residual_l1": lp_res,
                   "n_label0": int((ps.y == 0).sum()),
                   "z_distance_to_target": float((z_params(retrained) - z_params(target)).norm() / z_params(target).norm()), "passes_tau": reach.reachable(ps.info["eps"]),
                   "passes_tau_box": reach_box.reachable(ps.info["eps"]),
                   "accuracy": accuracy(retrained, test), "grad_norm": ps.info["final_grad_norm"],
                   "rel_grad_norm": ps.info["final_rel_grad_norm"], "distance_to_target": rep["retrained_to_target_distance"],
                   "agreement_with_target": rep["retrained_target_agreement"]}
            rows.append(row)
            print(f"  ε={row['eps']:.3f} ({k:3d} poisons, ≥τ: {row['passes_tau']!s:5}, ≥τ_box: {row['passes_tau_box']!s:5}): accuracy {row['accuracy']:6.2f} %, "
                  f"‖∇‖ mixed {row['grad_norm']:.3g}, label-0 poisons {row['n_label0']}, "
                  f"‖z−z*‖/‖z*‖ {row['z_distance_to_target']:.3f}", file=sys.stderr)

    fig, ax = new_figure(1, 3, figsize=(15, 4.3))
    im = ax[0].imshow(tau, origin="lower", extent=[w1s[0], w1s[-1], w2s[0], w2s[-1]], aspect="auto", cmap="viridis")
    ax[0].plot(*args.target, "r*", ms=12, label=f"target (τ={tau_star:.2f})")
    ax[0].set(xlabel="w1", ylabel="w2", title=f"τ of 0-accuracy targets (bias {args.bias:g}; blank: accuracy > 0)")
    ax[0].legend(loc="upper left", fontsize=8)
    fig.colorbar(im, ax=ax[0], label="τ = max{⟨w,g(μ)⟩/W(1/e), 0}")
    e = [r["eps"] for r in rows]
    ax[1].plot(e, [r["accuracy"] for r in rows], "o-")
    ax[1].axvline(tau_star, color="r", ls="--", label=f"τ = {tau_star:.3f}")
    ax[1].axvline(tau_box, color="m", ls=":", label=f"τ, pixels in [0,1] = {tau_box:.3f}")
    ax[1].set(xlabel="ε (poisons per clean point)", ylabel="test accuracy after GC + retraining (%)",
              title=f"GC + retraining, target w* (clean {acc_clean:.0f} %)", ylim=(-5, 105))
    ax[1].legend()
    ax[2].semilogy(e, [max(r["grad_norm"], 1e-12) for r in rows], "o-")
    ax[2].axvline(tau_star, color="r", ls="--", label="τ")
    ax[2].axvline(tau_box, color="m", ls=":", label="τ (pixels in [0,1])")
    ax[2].set(xlabel="ε", ylabel="‖∇ loss at target over D_tr ∪ D_p‖", title="gradient norm of the target")
    ax[2].legend()
    out = Path(args.out)
    save_figure(fig, out.with_suffix(".png"), dpi=110)
    write_json(out.with_suffix(".json"), {
        "quick": args.quick, "bias": args.bias, "w1": w1s.tolist(), "w2": w2s.tolist(),
        "tau_grid": [[None if np.isnan(v) else float(v) for v in row] for row in tau],
        "target": list(args.target), "tau": tau_star, "tau_box": tau_box, "margin_domain_box": domain, "clean_accuracy": acc_clean, "n_train": len(train),
        "recipe": {"epochs": args.epochs, "lr": args.lr, "batch_size": spec.recipe.batch_size},
        "gc": gc_opts, "rows": rows, "seconds": time.perf_counter() - t0,
    })
    print(f"wrote {out.with_suffix('.png')} and .json in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
