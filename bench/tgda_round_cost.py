"""Cost of one TGDA attack epoch on MNIST, the engine of before beside today's, in one process.

    OMP_NUM_THREADS=1 POISONLAB_DATA=/work/shared/data python bench/tgda_round_cost.py lr nn [cnn] [--rounds 3]

A round is TGDA's default one: m = 1 leader step (the total gradient with 10 CG iterations, warm-started
from the previous round's solve, damping 0.01) and n = 20 follower steps on 1000 clean + 30 poison
points, ℓ on 1000 validation points; an MNIST epoch is 42 rounds. Variants, timed round by round in
turn (so a change in the machine's load hits them alike):

* ``before``: the engine as it was — every Hessian-vector product recomputes f and ∇_w f (double
  backward), the mixed product too, CG reads the host every iteration; plain CG (on a network it
  stops at the first direction of negative curvature);
* ``before_ne`` (networks only): the same, on the normal equations (10 iterations, 20 products) — the
  one solver setting with which the NN game stayed finite before (docs/studies/tgda.md);
* ``now``: :func:`poisonlab.attacks.tgda.leader_gradient` with the defaults — one ∇_w f graph for
  the solve's products and the mixed product, CG reading the host every 5 iterations, the
  safeguarded solve (on a network: the normal equations after the first negative curvature, at
  half the iterations, kept for the following rounds as the attack keeps them).

The victims are freshly initialised (the cost does not depend on the weights; CG's iteration count
does, and is reported). CPU seconds (``time.process_time``) and wall seconds; on a shared machine
compare the variants' ratio, not the absolute numbers. Writes bench/results/tgda_round_cost.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import RESULTS, environment, write_json  # noqa: E402

from poisonlab.attacks import bilevel as B  # noqa: E402
from poisonlab.attacks.tgda import leader_gradient  # noqa: E402
from poisonlab.autodiff import CGOptions, inverse_hvp, mixed_vjp  # noqa: E402
from poisonlab.data import load_dataset, split_train_val  # noqa: E402
from poisonlab.models import build_generator, build_victim  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402

ROUNDS_PER_EPOCH = 42
SOLVER = CGOptions(damping=0.01, tol=1e-4, max_iter=10)  # TGDA's default solve


def leader_before(fol, gen, w, clean, sources, val, x0, normal_equations=False):
    """The total gradient as the engine computed it before: products recomputed, host read per iteration."""
    xc, yc = clean
    x0b, y0b = sources
    xv, yv = val
    theta = list(gen.parameters())
    with torch.enable_grad():
        xp = gen(x0b, y0b)

    def f(wt, xp_):
        return fol.mixed_loss(wt, xc, yc, xp_, y0b)

    wg = tuple(p.detach().clone().requires_grad_(True) for p in w)
    with torch.enable_grad():
        gw = torch.autograd.grad(fol.loss(wg, xv, yv), wg)
    solver = CGOptions(damping=0.01, tol=1e-4, max_iter=10, check_every=1, normal_equations=normal_equations)
    solve = inverse_hvp(f, w, gw, xp.detach(), solver=solver, x0=x0, method="double_backward")
    cross = mixed_vjp(f, w, solve.value, xp.detach())
    with torch.enable_grad():
        d_theta = torch.autograd.grad(xp, theta, grad_outputs=-cross)
    return d_theta, solve


def round_batches(d, rep: int):
    """Round ``rep``'s batches of MNIST (``d``: the D_tr / D_v split): 1000 clean points, the 30 poison
    sources, 1000 validation points, each as (x, y)."""
    sources = slice(40000 + 30 * rep, 40000 + 30 * (rep + 1))
    return ((d.train.x[1000 * rep: 1000 * (rep + 1)], d.train.y[1000 * rep: 1000 * (rep + 1)]),
            (d.train.x[sources], d.train.y[sources]), (d.val.x[:1000], d.val.y[:1000]))


def follower_steps(fol, gen, w, clean, sources) -> None:
    """The round's n = 20 follower steps on the clean batch ∪ the generator's poisons (w in place)."""
    (xc, yc), (x0b, y0b) = clean, sources
    with torch.no_grad():
        xp = gen(x0b, y0b)
    B.sgd_steps(partial(fol.mixed_loss, xc=xc, yc=yc, xp=xp, yp=y0b), w, 0.1, 20)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", choices=("lr", "nn", "cnn"))
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (after one warm-up round)")
    p.add_argument("--out", default=str(RESULTS / "tgda_round_cost.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    d = split_train_val(load_dataset("mnist").train, torch_generator(0, "split"))
    out: dict = {"environment": environment(), "rounds_per_epoch": ROUNDS_PER_EPOCH, "timed_rounds": args.rounds,
                 "note": "contended shared CPU: compare the variants' ratio", "models": {}}
    for name in args.models:
        fol, w = B.Follower.from_model(build_victim(name, (1, 28, 28), 10), torch.float32)
        gen = build_generator("fc_autoencoder", (1, 28, 28), 10)
        res: dict = {}
        state = {"before": {"x0": None}, "now": {"x0": None, "solver": replace(SOLVER, fallback=True)}}
        variants = ("before", "now") if name == "lr" else ("before", "before_ne", "now")
        if name != "lr":
            state["before_ne"] = {"x0": None}
        for rep in range(args.rounds + 1):
            (xc, yc), (x0b, y0b), (xv, yv) = round_batches(d, rep)
            for variant in variants:
                st = state[variant]
                c0, t0 = time.process_time(), time.perf_counter()
                if variant.startswith("before"):
                    _, solve = leader_before(fol, gen, w, (xc, yc), (x0b, y0b), (xv, yv), st["x0"], variant == "before_ne")
                else:
                    _, solve = leader_gradient(fol, gen, w, (xc, yc), (x0b, y0b), (xv, yv), solver=st["solver"],
                                               x0=st["x0"])
                    if solve.cg.solver is not None:
                        st["solver"] = solve.cg.solver  # sticky, as in the attack
                st["x0"] = solve.value
                c1 = time.process_time()
                follower_steps(fol, gen, w, (xc, yc), (x0b, y0b))
                c2, t2 = time.process_time(), time.perf_counter()
                if rep == 0:
                    continue  # warm-up (allocations, autograd caches)
                r = res.setdefault(variant, {"leader_cpu": [], "follower_cpu": [], "round_wall": [], "cg_iterations": [],
                                             "normal_equations": []})
                r["leader_cpu"].append(c1 - c0)
                r["follower_cpu"].append(c2 - c1)
                r["round_wall"].append(t2 - t0)
                r["cg_iterations"].append(solve.cg.iterations)
                r["normal_equations"].append(bool(solve.cg.solver.normal_equations) if solve.cg.solver else variant == "before_ne")
        for r in list(res.values()):
            lead, foll = (sum(r[k]) / len(r[k]) for k in ("leader_cpu", "follower_cpu"))
            r.update(leader_cpu_mean=lead, follower_cpu_mean=foll, epoch_cpu=ROUNDS_PER_EPOCH * (lead + foll),
                     epoch_wall=ROUNDS_PER_EPOCH * sum(r["round_wall"]) / len(r["round_wall"]))
        res["leader_speedup"] = res["before"]["leader_cpu_mean"] / res["now"]["leader_cpu_mean"]
        res["epoch_speedup"] = res["before"]["epoch_cpu"] / res["now"]["epoch_cpu"]
        if "before_ne" in res:  # the same solver (normal equations), the engine of before against today's
            def per_product(r: dict) -> float:  # leader CPU seconds per Hessian-vector product of its solve (2 per NE iteration)
                return r["leader_cpu_mean"] / (2 * sum(r["cg_iterations"]) / len(r["cg_iterations"]))

            res["leader_seconds_per_product_ratio"] = per_product(res["before_ne"]) / per_product(res["now"])
            res["epoch_speedup_vs_before_ne"] = res["before_ne"]["epoch_cpu"] / res["now"]["epoch_cpu"]
        out["models"][name] = res
        for variant in variants:
            r = res[variant]
            print(f"{name:4s} {variant:6s}: leader {r['leader_cpu_mean']:.3f} s CPU (CG its {r['cg_iterations']}), "
                  f"20 follower steps {r['follower_cpu_mean']:.3f} s -> {r['epoch_cpu']:.1f} s CPU per MNIST epoch "
                  f"({r['epoch_wall']:.1f} s wall)", flush=True)
        print(f"{name:4s} leader x{res['leader_speedup']:.2f}, epoch x{res['epoch_speedup']:.2f}", flush=True)
        write_json(Path(args.out), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
