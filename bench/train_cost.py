"""Seconds of one victim training on MNIST (THE training loop), and a hash of the weights it gives.

    OMP_NUM_THREADS=1 python bench/train_cost.py [--model lr] [--batch-sizes full,1000] [--epochs 30]

Trains the victim from seed 0 on MNIST's first 42 000 training points (|D_tr| of the protocol) with
its recipe at each batch size (``full``: one batch of all points, ``pl.victim("lr")``'s default) for
``--epochs`` epochs. Run it at two commits to compare: equal hashes mean bit-identical training.
Writes bench/results/train_cost.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, mnist_d_tr_sized, weights_digest  # noqa: E402

import poisonlab as pl  # noqa: E402
from poisonlab.artifacts import write_json  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402
from poisonlab.training.loop import train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lr")
    p.add_argument("--batch-sizes", default="full,1000", help="comma-separated: full or an integer")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", type=Path, default=RESULTS / "train_cost.json")
    args = p.parse_args(argv)
    sizes = [None if s == "full" else int(s) for s in args.batch_sizes.split(",") if s]
    data = mnist_d_tr_sized()
    rows = []
    for bs in sizes:
        spec = pl.victim(args.model, epochs=args.epochs, batch_size=bs, device="cpu").for_data(data.input_shape,
                                                                                             data.num_classes)
        model = spec.build(0)
        t0 = time.perf_counter()
        train(model, data, spec.recipe, torch_generator(0, "batches"))
        seconds = time.perf_counter() - t0
        digest = weights_digest(model)
        rows.append({"batch_size": bs, "epochs": args.epochs, "seconds": seconds, "weights_sha256_16": digest})
        print(f"{args.model} batch {bs or 'full'}: {args.epochs} epochs in {seconds:.2f} s, weights {digest}")
    write_json(args.out, {"environment": environment(), "model": args.model, "n_train": len(data), "runs": rows})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
