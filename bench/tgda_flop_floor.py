"""The arithmetic floor of one TGDA epoch on MNIST: how fast it could be on this CPU, at best.

    OMP_NUM_THREADS=1 POISONLAB_DATA=/work/shared/data python bench/tgda_flop_floor.py lr nn [--rounds 2]

One default round is run, as ``bench/tgda_round_cost.py`` runs it: the leader's total gradient
(:func:`poisonlab.attacks.tgda.leader_gradient`, 10 CG iterations, the safeguarded solve), the
generator's forward pass, and n = 20 follower steps on 1000 clean + 30 poison points. Every
matrix product of the round is recorded, with its shape, by a dispatch mode; an epoch is
:data:`ROUNDS_PER_EPOCH` rounds. Three lower bounds on the seconds per epoch come out:

* ``floor_at_peak``: the epoch's FLOPs over this CPU's peak (the best rate of square float32
  products of 1024, 2048 and 3072, at the current thread count);
* ``floor_at_shape``: each recorded product timed alone at its own shape (the faster of ``a @ b``
  and ``(bᵀ @ aᵀ)ᵀ``, best of 20), summed over the epoch. torch's own kernels, nothing else
  around them: no autograd, no elementwise work, no Python;
* ``follower_floor_at_shape``: the same, for the 20 follower steps alone (the leader's CG can stop
  early; the follower steps cannot).

Elementwise operations, reductions and overhead are left out, so each is a bound the real epoch
cannot beat. Beside them: the round's measured seconds × 42 and the target of issue #26
(LR 0.3 s, NN 30 s per epoch, CNN 259 s / 3). Writes bench/results/tgda_flop_floor.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import RESULTS, environment, write_json  # noqa: E402
from tgda_round_cost import ROUNDS_PER_EPOCH, follower_steps, round_batches  # noqa: E402
from tgda_round_cost import SOLVER as ROUND_SOLVER  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from poisonlab.attacks import bilevel as B  # noqa: E402
from poisonlab.attacks.tgda import leader_gradient  # noqa: E402
from poisonlab.data import load_dataset, split_train_val  # noqa: E402
from poisonlab.models import build_generator, build_victim  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402

SOLVER = replace(ROUND_SOLVER, fallback=True)  # TGDA's default solve, safeguarded as the attack runs it
TARGETS = {"lr": 0.3, "nn": 30.0, "cnn": 259.0 / 3}  # issue #26, seconds per MNIST epoch, 1 thread

_aten = torch.ops.aten
_MM = {_aten.mm.default: "mm", _aten.addmm.default: "addmm", _aten.bmm.default: "bmm"}


class ProductLog(TorchDispatchMode):
    """Counts every matrix product (mm, addmm, bmm) by its (batch, m, k, n) shape."""

    def __init__(self) -> None:
        super().__init__()
        self.products: Counter[tuple[int, int, int, int]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _MM:
            a, b = (args[1], args[2]) if func is _aten.addmm.default else (args[0], args[1])
            shape = (a.shape[0], a.shape[1], a.shape[2], b.shape[2]) if a.dim() == 3 else (1, a.shape[0], a.shape[1], b.shape[1])
            self.products[shape] += 1
        return func(*args, **(kwargs or {}))


def flops(shape: tuple[int, int, int, int]) -> float:
    batch, m, k, n = shape
    return 2.0 * batch * m * k * n


def best_seconds(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def shape_seconds(shape: tuple[int, int, int, int], reps: int = 20) -> float:
    """The faster of the two layouts of one product of this shape, alone."""
    batch, m, k, n = shape
    a, b = torch.randn(batch, m, k), torch.randn(batch, k, n)
    at, bt = a.transpose(1, 2).contiguous(), b.transpose(1, 2).contiguous()
    if batch == 1:
        a, b, at, bt = a[0], b[0], at[0], bt[0]
        return min(best_seconds(lambda: a @ b, reps), best_seconds(lambda: (bt @ at).T, reps))
    return min(best_seconds(lambda: torch.bmm(a, b), reps), best_seconds(lambda: torch.bmm(bt, at).transpose(1, 2), reps))


def peak_flops() -> float:
    """The best FLOP rate of square float32 products of 1024, 2048 and 3072 (best of 5 each)."""
    rates = []
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n), torch.randn(n, n)
        rates.append(2.0 * n**3 / best_seconds(lambda: a @ b, 5))  # noqa: B023 (called at once)
    return max(rates)


def leader(fol, gen, w, batches, solver, x0):
    clean, sources, val = batches
    return leader_gradient(fol, gen, w, clean, sources, val, solver=solver, x0=x0)


def follower(fol, gen, w, batches) -> None:
    follower_steps(fol, gen, w, batches[0], batches[1])


def per_epoch(logs: list[ProductLog], cost) -> float:
    """The rounds' mean of ``cost(shape)`` summed over their products, times the rounds of an epoch."""
    return ROUNDS_PER_EPOCH * sum(sum(n * cost(s) for s, n in lg.products.items()) for lg in logs) / len(logs)


def measure(name: str, d, rounds: int, peak: float) -> dict:
    fol, w = B.Follower.from_model(build_victim(name, (1, 28, 28), 10), torch.float32)
    gen = build_generator("fc_autoencoder", (1, 28, 28), 10)
    solver, x0 = SOLVER, None
    lead_logs, foll_logs, seconds, cg_its, total_flops = [], [], [], [], []
    for rep in range(rounds + 1):
        batch = round_batches(d, rep)
        t0 = time.perf_counter()
        leader(fol, gen, w, batch, solver, x0)
        follower(fol, gen, w, batch)
        if rep > 0:  # the first round warms up (allocations, autograd caches)
            seconds.append(time.perf_counter() - t0)
        lead_log, foll_log, counter = ProductLog(), ProductLog(), FlopCounterMode(display=False)
        with lead_log:
            _, solve = leader(fol, gen, w, batch, solver, x0)
        with foll_log:
            follower(fol, gen, w, batch)
        with counter:  # every FLOP torch counts (convolutions too): the round once more
            leader(fol, gen, w, batch, solver, x0)
            follower(fol, gen, w, batch)
        total_flops.append(counter.get_total_flops())
        if solve.cg.solver is not None:
            solver = solve.cg.solver  # sticky, as in the attack
        x0 = solve.value
        cg_its.append(solve.cg.iterations)
        lead_logs.append(lead_log)
        foll_logs.append(foll_log)
    logs = lead_logs + foll_logs
    shapes = sorted({s for lg in logs for s in lg.products})
    alone = {s: shape_seconds(s) for s in shapes}
    n_rounds = len(lead_logs)
    mm_flops = per_epoch(lead_logs, flops) + per_epoch(foll_logs, flops)
    # what is not a matrix product (convolutions), from torch's counter, at the peak's speed
    other = max(ROUNDS_PER_EPOCH * sum(total_flops) / n_rounds - mm_flops, 0.0)
    return {
        "cg_iterations": cg_its, "normal_equations": bool(solver.normal_equations),
        "epoch_gflop": (mm_flops + other) / 1e9, "follower_epoch_gflop": per_epoch(foll_logs, flops) / 1e9,
        "floor_at_peak": (mm_flops + other) / peak,
        "floor_at_shape": per_epoch(lead_logs, alone.__getitem__) + per_epoch(foll_logs, alone.__getitem__) + other / peak,
        "follower_floor_at_shape": per_epoch(foll_logs, alone.__getitem__),
        "measured_epoch": ROUNDS_PER_EPOCH * sum(seconds) / len(seconds),
        "target": TARGETS[name],
        "shapes": {"x".join(map(str, s)): {"per_round": sum(lg.products[s] for lg in logs) / n_rounds,
                                           "gflops_alone": flops(s) / alone[s] / 1e9} for s in shapes},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", choices=("lr", "nn", "cnn"))
    p.add_argument("--rounds", type=int, default=2, help="measured rounds (after one warm-up round)")
    p.add_argument("--out", default=str(RESULTS / "tgda_flop_floor.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    peak = peak_flops()
    print(f"peak: {peak / 1e9:.0f} GFLOP/s (square float32 products, {torch.get_num_threads()} thread(s))", flush=True)
    d = split_train_val(load_dataset("mnist").train, torch_generator(0, "split"))
    out: dict = {"environment": environment(), "rounds_per_epoch": ROUNDS_PER_EPOCH, "peak_flops": peak,
                 "targets_seconds_per_epoch": TARGETS, "models": {}}
    for name in args.models:
        res = out["models"][name] = measure(name, d, args.rounds, peak)
        print(f"{name}: {res['epoch_gflop']:.1f} GFLOP per epoch (follower {res['follower_epoch_gflop']:.1f}); "
              f"floor at peak {res['floor_at_peak']:.2f} s, at the products' own speed {res['floor_at_shape']:.2f} s "
              f"(follower alone {res['follower_floor_at_shape']:.2f} s); measured {res['measured_epoch']:.2f} s; "
              f"target {res['target']:.1f} s", flush=True)
        write_json(Path(args.out), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
