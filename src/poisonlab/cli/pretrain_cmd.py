"""``poisonlab pretrain``: pre-train a feature extractor (SimCLR or supervised), cached as safetensors:
argument parsing and one :func:`poisonlab.pretrain_extractor` call.

Prints the cache key and the path; use either as ``--model linear_probe:<key or path>``.
"""

from __future__ import annotations

import argparse

from ..api import PretrainConfig, pretrain_extractor
from ..pretrain.store import METHODS
from .key_values import parse_key_values
from .run_cmd import print_result


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="pre-train a feature extractor (SimCLR / supervised), cached as safetensors",
                       description="Pre-train an encoder on a dataset's training images and cache it. "
                                   "Use the printed key as --model linear_probe:<key> or fine_tune:<key>.")
    d = PretrainConfig()
    p.add_argument("--dataset", default=d.dataset, help=f"registered name or .npz path (default {d.dataset})")
    p.add_argument("--method", default=d.method, choices=METHODS)
    p.add_argument("--encoder", default=d.encoder, help="conv (default) or resnet18")
    p.add_argument("--encoder-option", "-E", action="append", default=[], metavar="KEY=VALUE",
                   help="encoder option, e.g. -E channels=[16,32,64] or -E width=32")
    p.add_argument("--n-images", type=int, default=d.n_images, help=f"seeded subset size, 0 = all (default {d.n_images})")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam lr (simclr) or SGD lr (supervised)")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="write here instead of the cache (<cache>/<key>.safetensors)")
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.add_argument("--json", action="store_true", help="print the metadata as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    res = pretrain_extractor({
        "dataset": args.dataset, "method": args.method, "encoder": args.encoder,
        "encoder_options": parse_key_values(args.encoder_option, "encoder option"), "n_images": args.n_images,
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "temperature": args.temperature,
        "seed": args.seed,
    }, data_dir=args.data_dir, out=args.out, device=args.device, force=args.force, progress=not (args.quiet or args.json))

    def text() -> str:
        state = "cached" if res.cached else f"trained in {res.seconds:.1f} s"
        return (f"extractor {res.key} ({state}): {res.path}\n"
                f"  use: poisonlab run --model linear_probe:{res.key if not args.out else res.path} ...")

    return print_result(res.to_dict(), args.json, text)
