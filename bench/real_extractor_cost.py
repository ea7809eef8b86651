"""What the input-space attacks of chapter 4 (TGDA, GC, unlearnable examples, feature-targeted) cost
through the real frozen EfficientNet-Lite0 backbone at the issue's scale, measured per image and
extrapolated (issue #17, item 2).

1. Measured, one CPU thread, a batch of ``--batch`` CIFAR-10 training images (32x32, upsampled
   bilinearly to ``--resolution``, as the extractor victims do), TFLite scaling, median of
   ``--repeats`` timed repetitions after one warm-up:

   - ``F``: forward pass to the 1 280-d features (no gradient);
   - ``B``: forward + backward to the *input* of a linear head's cross-entropy (what one PGD /
     inversion step per poison costs: unlearnable examples, feature-targeted stage (c));
   - ``B2``: the gradient, with respect to the input, of an inner product with the gradient of
     the head's parameters (``create_graph``; what Gradient Canceling and TGDA's leader need per
     poison per step: a mixed second derivative through the backbone).

2. Extrapolated at the issue's scale: CIFAR-10, D_tr = the protocol's 70 % of 50 000 = 35 000,
   ε = 3 % -> 1 050 poisons, 2 constraints (none, L∞ 8/255), 3 seeds, each attack at its
   defaults. The count is a *lower bound*: backbone passes that involve the poisons only (the
   clean D_tr / D_v features cached once, the probe retrained on features), per
   (attack, constraint, seed):

   - feature_targeted: invert_steps·n B + n F (stages (a), (b) are in feature space);
   - unlearnable: rounds·(pgd_steps·n B + 2·n F) + n F;
   - gc: steps·n B2 + n F;
   - tgda: epochs·(m·n B2 + n F) + n F (each poison is in one round per epoch, with its batch:
     m leader steps through generator and backbone, the follower's steps on its features; CG's
     HVPs and the clean part of each batch on cached features).

   plus, once, the clean features of the 50 000 + 10 000 images (``F`` each). The attacks as
   written today run the victim model whole, so on a ``linear_probe:<extractor>`` victim they also
   push D_tr through the backbone at every surrogate epoch / follower step / HVP; that is not
   counted here.

    OMP_NUM_THREADS=1 POISONLAB_DATA=... python bench/real_extractor_cost.py

Writes bench/results/real_extractor_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from poisonlab.attacks import ATTACKS  # noqa: E402
from poisonlab.data import load_dataset  # noqa: E402
from poisonlab.models.pretrained import efficientnet as E  # noqa: E402

N_TRAIN, N_TEST, D_TR, CONSTRAINTS, SEEDS = 50_000, 10_000, 35_000, 2, 3


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.03)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()

    x32 = load_dataset("cifar10").train.x[: args.batch].float()
    y = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(0))
    enc = E.pretrained_encoder((3, args.resolution, args.resolution))
    head = torch.nn.Linear(E.FEATURE_DIM, 10)
    v_w = torch.randn_like(head.weight)

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(args.resolution, args.resolution), mode="bilinear", align_corners=False)

    def forward() -> None:
        with torch.no_grad():
            enc(up(x32))

    def backward_to_input() -> None:
        x = x32.clone().requires_grad_(True)
        loss = F.cross_entropy(head(enc(up(x))), y, reduction="sum")
        torch.autograd.grad(loss, x)

    def mixed_second() -> None:
        x = x32.clone().requires_grad_(True)
        loss = F.cross_entropy(head(enc(up(x))), y, reduction="sum")
        (g_w,) = torch.autograd.grad(loss, head.weight, create_graph=True)
        torch.autograd.grad((g_w * v_w).sum(), x)

    per_image = {name: timed(fn, args.repeats) / args.batch
                 for name, fn in (("F", forward), ("B", backward_to_input), ("B2", mixed_second))}
    print(", ".join(f"{k} {1000 * v:.2f} ms/image" for k, v in per_image.items()), flush=True)

    n = round(args.fraction * D_TR)
    cfg = {name: ATTACKS.get(name).Config() for name in ("feature_targeted", "unlearnable", "gc", "tgda")}
    Fi, Bi, B2i = per_image["F"], per_image["B"], per_image["B2"]
    ft, ue, gc, tg = cfg["feature_targeted"], cfg["unlearnable"], cfg["gc"], cfg["tgda"]
    passes = {
        "feature_targeted": {"B": ft.invert_steps * n, "F": n, "B2": 0,
                             "formula": f"invert_steps ({ft.invert_steps})·n B + n F"},
        "unlearnable": {"B": ue.rounds * ue.pgd_steps * n, "F": ue.rounds * 2 * n + n, "B2": 0,
                        "formula": f"rounds ({ue.rounds})·(pgd_steps ({ue.pgd_steps})·n B + 2·n F) + n F"},
        "gc": {"B": 0, "F": n, "B2": gc.steps * n, "formula": f"steps ({gc.steps})·n B2 + n F"},
        "tgda": {"B": 0, "F": tg.epochs * n + n, "B2": tg.epochs * tg.m * n,
                 "formula": f"epochs ({tg.epochs})·(m ({tg.m})·n B2 + n F) + n F"},
    }
    extrapolated = {}
    for name, p in passes.items():
        s = p["F"] * Fi + p["B"] * Bi + p["B2"] * B2i
        extrapolated[name] = {**p, "seconds_per_run": s, "runs": CONSTRAINTS * SEEDS,
                              "hours_all_runs": s * CONSTRAINTS * SEEDS / 3600}
        print(f"{name:>16s}: {s / 60:.0f} min per (constraint, seed) run, {extrapolated[name]['hours_all_runs']:.1f} h for "
              f"{CONSTRAINTS} constraints x {SEEDS} seeds   [{p['formula']}]", flush=True)
    clean_features = (N_TRAIN + N_TEST) * Fi
    total_h = clean_features / 3600 + sum(e["hours_all_runs"] for e in extrapolated.values())
    print(f"clean features once: {clean_features / 60:.0f} min; all four attacks at the issue's scale: {total_h:.1f} h "
          "on one thread (lower bound)", flush=True)
    record = {
        "backbone": E.SOURCE,
        "settings": vars(args), "scale": {"d_tr": D_TR, "n_poison": n, "constraints": CONSTRAINTS, "seeds": SEEDS,
                                          "clean_images": N_TRAIN + N_TEST},
        "seconds_per_image": per_image,
        "passes_per_run": passes, "extrapolated": extrapolated,
        "clean_features_seconds": clean_features, "total_hours_lower_bound": total_h,
        "total_seconds": time.time() - t_start,
        "note": "one CPU thread on a shared 2-core machine; lower bound (poison passes only, clean features cached).",
    }
    common.save("real_extractor_cost", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
