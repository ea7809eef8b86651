"""What the LR victim's matrix layout costs: ``nn.Linear`` (x·Wᵀ, MKL's kernel for a (1000 × 784)·(784 × 10)
product) against the same product computed as (W·xᵀ)ᵀ, in one process, alternating.

    OMP_NUM_THREADS=1 python bench/lr_layout.py [--repeats 3] [--epochs 30] [--tgda-epochs 2]
    OMP_NUM_THREADS=1 python bench/lr_layout.py --protocol label_flip,i_min_max,tgda [--layout transposed]

A lever for issue #24 (the full MNIST LR evaluation row in 45 minutes), not applied: the two layouts sum in
a different order, so the weights differ by float rounding and every recorded LR number would move.
Per layout and repeat: one victim training (THE training loop, MNIST's first 42 000 points, batch 1000,
``--epochs``) and TGDA's seconds per attack epoch (``pl.poison`` with ``--tgda-epochs`` epochs, no
selection, the clean victim from a cache shared by both layouts). Prints the ratios (transposed / linear)
and whether the trained weights are bit-identical. Writes bench/results/lr_layout.json (or ``--out``).

``--protocol`` instead runs the whole protocol (``pl.run``, MNIST, ε = 3 %, seed 0, each attack on its
defaults) under one ``--layout``, to see how far the rounding moves the accuracies; it writes
bench/results/lr_layout_protocol.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from common import RESULTS, environment, mnist_d_tr_sized, weights_digest  # noqa: E402

import poisonlab as pl  # noqa: E402
from poisonlab.artifacts import write_json  # noqa: E402
from poisonlab.models import victims  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.training.loop import train  # noqa: E402

LINEAR = victims.LogisticRegression.forward


def transposed(self: victims.LogisticRegression, x: torch.Tensor) -> torch.Tensor:
    """(W·xᵀ + b)ᵀ: the same logits as ``self.linear(x)`` up to float rounding."""
    lin = self.linear
    return torch.addmm(lin.bias[:, None], lin.weight, x.flatten(1).t()).t()


LAYOUTS = {"linear": LINEAR, "transposed": transposed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--tgda-epochs", type=int, default=2)
    p.add_argument("--protocol", help="comma-separated attacks: run the protocol under --layout instead")
    p.add_argument("--layout", choices=tuple(LAYOUTS), default="transposed")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.protocol:
        return protocol(args)
    args.out = args.out or RESULTS / "lr_layout.json"
    data = mnist_d_tr_sized()
    spec = pl.victim("lr", epochs=args.epochs, batch_size=1000, device="cpu").for_data(data.input_shape, data.num_classes)
    cache = Path(tempfile.mkdtemp(prefix="lr-layout-cache-"))
    rows: list[dict] = []
    digests: dict[str, str] = {}
    for rep in range(args.repeats):
        for name, forward in LAYOUTS.items():
            victims.LogisticRegression.forward = forward  # type: ignore[method-assign]
            model = spec.build(0)
            t0 = time.perf_counter()
            train(model, data, spec.recipe, torch_generator(0, "bench"))
            train_s = time.perf_counter() - t0
            digests[name] = weights_digest(model)
            ps = pl.poison("mnist", "lr", "tgda", 0.03, seed=0, cache=cache, progress=False,
                           options={"epochs": args.tgda_epochs, "selection.every": 0})
            row = {"repeat": rep, "layout": name, "train_seconds": train_s,
                   "tgda_seconds_per_epoch": ps.info["seconds_per_epoch"]}
            rows.append(row)
            print(row, flush=True)
    victims.LogisticRegression.forward = LINEAR  # type: ignore[method-assign]

    def median(layout: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["layout"] == layout)

    summary = {key: {"linear": median("linear", key), "transposed": median("transposed", key),
                     "ratio": median("transposed", key) / median("linear", key)}
               for key in ("train_seconds", "tgda_seconds_per_epoch")}
    summary["weights_bit_identical"] = digests["linear"] == digests["transposed"]
    for key, v in summary.items():
        print(f"{key}: {v}")
    write_json(args.out, {"environment": environment(), "epochs": args.epochs, "tgda_epochs": args.tgda_epochs,
                          "rows": rows, "summary": summary})
    print(f"-> {args.out}")
    return 0


def protocol(args: argparse.Namespace) -> int:
    victims.LogisticRegression.forward = LAYOUTS[args.layout]  # type: ignore[method-assign]
    rows = []
    for attack in [a for a in args.protocol.split(",") if a]:
        res = pl.run("mnist", "lr", attack, 0.03, seed=0, progress=False).to_dict()
        rows.append({"attack": attack, "layout": args.layout, "clean_accuracy": res["clean_accuracy"],
                     "poisoned_accuracy": res["poisoned_accuracy"], "total_seconds": res["total_seconds"]})
        print(rows[-1], flush=True)
    out = args.out or RESULTS / "lr_layout_protocol.json"
    write_json(out, {"environment": environment(), "rows": rows})
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
