"""Where a MaxUp training step's time goes: the Gaussian draws against the network's work.

    OMP_NUM_THREADS=1 python bench/maxup_cost.py [--models lr,nn] [--batches 30] [--out FILE]

One MNIST-shaped batch (B = 1000 inputs of 1x28x28, the MNIST recipe's batch) and MaxUp's defaults
(m = 4 perturbations, sigma = 0.1 of the [0, 1] span). Each variant runs ``--batches`` consecutive
steps (a training loop's steady state: the allocator reuses the previous step's buffers), the variants
in turn, three times over, so a change in the machine's load hits them alike:

* ``noise``: the draw alone, ``torch.randn((m, B, 1, 28, 28), generator=g)`` on a CPU generator
  (what :func:`poisonlab.defenses.maxup.worst_case_loss` draws every batch);
* ``maxup_step``: one MaxUp training step: ``worst_case_loss`` (draw, perturb, clip, forward on
  m*B inputs, max over m), its mean's backward and the optimiser's step;
* ``maxup_step_before``: the same step as it was before the perturbation moved into the noise's
  buffer: ``x + sigma * noise`` and the clip each in a new m*B buffer (the same values, bit for bit);
* ``plain_step``: one ordinary training step on the B clean inputs.

``--fit-epochs N`` also times one whole MaxUp fit on MNIST's first 42 000 training points (the MNIST
LR recipe, batch 1000, cut to N epochs; needs the MNIST file) and prints a hash of its weights, so two
commits can be compared for time and bit-identity.

The cost does not depend on the values, so the victims are freshly initialised and the batch is
uniform noise. Prints seconds per batch and the noise's share of a MaxUp step; writes
bench/results/maxup_cost.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import RESULTS, environment, mnist_d_tr_sized, weights_digest  # noqa: E402

import poisonlab as pl  # noqa: E402
from poisonlab.artifacts import write_json  # noqa: E402
from poisonlab.data.bounds import Bounds  # noqa: E402
from poisonlab.defenses.maxup import MaxUpConfig, worst_case_loss  # noqa: E402

B, SHAPE = 1000, (1, 28, 28)
ROUNDS = 3  # each variant times --batches consecutive steps, in turn, this many times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lr,nn", help="comma-separated victims (default lr,nn)")
    p.add_argument("--batches", type=int, default=30, help="consecutive timed steps per variant and turn (default 30)")
    p.add_argument("--fit-epochs", type=int, default=0, help="also time one MaxUp fit of LR on MNIST (0: none)")
    p.add_argument("--out", type=Path, default=RESULTS / "maxup_cost.json")
    args = p.parse_args(argv)
    if args.batches < 1:
        p.error("--batches must be >= 1")

    cfg = MaxUpConfig()
    bounds = Bounds.of((0.0, 1.0), SHAPE)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((B, *SHAPE), generator=gen)
    y = torch.randint(0, 10, (B,), generator=gen)
    rows = {}
    for name in [m for m in args.models.split(",") if m]:
        model = pl.victim(name, device="cpu").for_data(SHAPE, 10).build(seed=0)
        per = _time_steps(model, x, y, bounds, cfg, gen, args.batches)
        share = per["noise"] / per["maxup_step"]
        rows[name] = {**{f"{k}_s": v for k, v in per.items()}, "noise_share_of_maxup_step": share,
                      "maxup_over_plain": per["maxup_step"] / per["plain_step"],
                      "before_over_now": per["maxup_step_before"] / per["maxup_step"]}
        print(f"{name:3s} noise {per['noise'] * 1e3:6.1f} ms | MaxUp step {per['maxup_step'] * 1e3:6.1f} ms "
              f"(noise {share:.0%}; before {per['maxup_step_before'] * 1e3:6.1f} ms, "
              f"x{rows[name]['before_over_now']:.2f}) | plain step {per['plain_step'] * 1e3:6.1f} ms "
              f"(MaxUp x{rows[name]['maxup_over_plain']:.1f})")
    fit = _fit(args.fit_epochs) if args.fit_epochs > 0 else None
    write_json(args.out, {"environment": environment(), "batch": B, "input_shape": list(SHAPE), "m": cfg.m,
                          "sigma": cfg.sigma, "batches": args.batches, "models": rows, "fit": fit})
    print(f"-> {args.out}")
    return 0


def _fit(epochs: int) -> dict[str, object]:
    """One MaxUp fit of LR on 42 000 MNIST training points: seconds and a hash of the weights."""
    from poisonlab.defenses import build_defense
    from poisonlab.seeding import torch_generator
    from poisonlab.training.victim import Victim

    train = mnist_d_tr_sized()
    spec = pl.victim("lr", epochs=epochs, batch_size=1000, device="cpu").for_data(train.input_shape, train.num_classes)
    t0 = time.perf_counter()
    model = build_defense("maxup").fit(train, Victim(spec, 0), generator=torch_generator(0, "defense"))
    seconds = time.perf_counter() - t0
    digest = weights_digest(model)
    print(f"MaxUp fit of LR on MNIST (42 000 points, {epochs} epochs): {seconds:.1f} s, weights {digest}")
    return {"epochs": epochs, "seconds": seconds, "weights_sha256_16": digest}


def _time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bounds: Bounds, cfg: MaxUpConfig,
                gen: torch.Generator, batches: int) -> dict[str, float]:
    """Seconds per step of each variant (module docstring): ROUNDS turns of ``batches`` consecutive steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def noise() -> None:
        torch.randn((cfg.m, B, *SHAPE), generator=gen)

    def maxup_step() -> None:
        opt.zero_grad(set_to_none=True)
        worst_case_loss(model, x, y, cfg.m, cfg.sigma, gen, bounds).mean().backward()
        opt.step()

    def maxup_step_before() -> None:
        opt.zero_grad(set_to_none=True)
        noise = torch.randn((cfg.m, B, *SHAPE), generator=gen)
        xs = bounds.clamp(x.unsqueeze(0) + cfg.sigma * noise)
        losses = F.cross_entropy(model(xs.reshape(cfg.m * B, *SHAPE)), y.repeat(cfg.m), reduction="none")
        losses.view(cfg.m, B).max(0).values.mean().backward()
        opt.step()

    def plain_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    variants = {"noise": noise, "maxup_step": maxup_step, "maxup_step_before": maxup_step_before,
                "plain_step": plain_step}
    spent = dict.fromkeys(variants, 0.0)
    for _ in range(ROUNDS):
        for key, fn in variants.items():
            fn()  # warm-up: a training loop repeats one step, so time the steady state
            t0 = time.perf_counter()
            for _ in range(batches):
                fn()
            spent[key] += time.perf_counter() - t0
    return {k: v / (ROUNDS * batches) for k, v in spent.items()}


if __name__ == "__main__":
    sys.exit(main())
