"""``poisonlab target``: train the clean victim, corrupt it with GradPC, save the target model.

The target (safetensors) feeds ``poisonlab threshold --target FILE`` and
``poisonlab run --attack gc --target FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from torch import nn

from ..attacks.gradpc import GradPCConfig
from ..attacks.targets import make_target
from ..cache import as_cache
from ..protocol import RunConfig, load_state, prepare, pretrain_victim, save_model
from ..protocol.prepare import Prepared
from ..reporting import format_table
from ..training import accuracy

#: THE command-line shortcuts for GradPC's options (:class:`~poisonlab.attacks.gradpc.GradPCConfig`):
#: (flags, field, type, help). ``target`` / ``threshold`` pass them to the gradpc maker; ``run`` to the
#: attack's option group ``target_options`` (gc, feature_targeted).
GRADPC_FLAGS: tuple[tuple[tuple[str, ...], str, type, str], ...] = (
    (("--eps-w",), "eps_w", float, "GradPC relative radius ‖Δw‖ ≤ eps_w·‖w‖"),
    (("--pc-norm", "--norm"), "norm", str, "GradPC norm, l2 or linf"),
    (("--pc-topk", "--topk"), "topk", int, "GradPC: change at most this many parameters"),
    (("--pc-steps",), "steps", int, "GradPC ascent steps"),
    (("--pc-lr",), "lr", float, "GradPC step length as a fraction of the radius"),
)


def add_gradpc_args(p: argparse.ArgumentParser, *, aliases: bool = True, what: str = "") -> None:
    """Add :data:`GRADPC_FLAGS` (defaults: GradPCConfig's; a flag not given leaves the option alone).
    ``aliases=False`` leaves out the short aliases (``--norm``, ``--topk``)."""
    defaults = GradPCConfig()
    for flags, name, kind, text in GRADPC_FLAGS:
        default = getattr(defaults, name)
        p.add_argument(*(flags if aliases else flags[:1]), dest=f"gradpc_{name}", type=kind, default=None,
                       metavar=name.upper(), choices=("l2", "linf") if name == "norm" else None,
                       help=f"{what}{text} (= GradPC option {name}; default {default})")


def gradpc_options(args: argparse.Namespace) -> dict[str, Any]:
    """{GradPC option: value} of the :data:`GRADPC_FLAGS` given on the command line."""
    out = {}
    for _, name, _, _ in GRADPC_FLAGS:
        value = getattr(args, f"gradpc_{name}", None)
        if value is not None:
            out[name] = value
    return out


def add_victim_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``target`` and ``threshold``: the data, the victim, GradPC's options and the output."""
    p.add_argument("--dataset", default="digits", help="registered name or a path to an .npz file (default digits)")
    p.add_argument("--model", default="lr", help="victim architecture: lr, nn, cnn, resnet18 (default lr)")
    p.add_argument("--seed", type=int, default=0, help="run seed: the 70/30 split and the clean training (default 0)")
    p.add_argument("--epochs", type=int, help="victim training epochs (default 100)")
    p.add_argument("--lr", type=float, help="victim SGD learning rate (default 0.1)")
    p.add_argument("--batch-size", type=int, help="victim batch size (default: the dataset's)")
    p.add_argument("--data-dir", help="where dataset files live (default $POISONLAB_DATA)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--clean", metavar="FILE.safetensors", help="clean victim weights to start from (e.g. a run's "
                   "victim_clean.safetensors, same dataset/seed) instead of training it")
    add_gradpc_args(p)
    p.add_argument("--cache-dir", help="re-use / store the clean victim and the GradPC target in this artifact cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run_config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(dataset=args.dataset, model=args.model, seed=args.seed, epochs=args.epochs, lr=args.lr,
                     batch_size=args.batch_size, data_dir=args.data_dir, device=args.device, cache_dir=args.cache_dir)


def prepared(args: argparse.Namespace) -> Prepared:
    return prepare(run_config(args))


def clean_model(prep: Prepared, args: argparse.Namespace) -> nn.Module:
    if args.clean:
        model = prep.spec.build(args.seed)
        from ..attacks.targets import load_target

        return load_target(args.clean, model)
    if not args.quiet:
        print("[poisonlab] training the clean victim on D_tr" + (" (or loading it from the cache)" if args.cache_dir else ""),
              file=sys.stderr, flush=True)
    model, _ = pretrain_victim(run_config(args), prep, progress=not args.quiet)  # stage 1 of the protocol
    return model


def build_target(prep: Prepared, args: argparse.Namespace, target: str) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    """(target model, clean model or None, info) for ``target`` = "gradpc" or a .safetensors path."""
    if target == "gradpc":
        clean = clean_model(prep, args)
        model, info = make_target("gradpc", clean, prep.data.val, gradpc_options(args), progress=not args.quiet,
                                  cache=as_cache(args.cache_dir))
        return model, clean, info
    model, info = make_target(target, prep.spec.build(args.seed), prep.data.val, {})
    return model, None, info


def add_parser(sub) -> None:
    p = sub.add_parser("target", help="make a GradPC target model (parameter corruption) and save it",
                       description="Train the clean victim (or load --clean), corrupt it with GradPC "
                                   "(max validation loss, ‖Δw‖ ≤ eps_w‖w‖) and save the target as safetensors.")
    add_victim_args(p)
    p.add_argument("--out", default="target.safetensors", help="where to save the target (default target.safetensors)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    prep = prepared(args)
    target, clean, info = build_target(prep, args, "gradpc")
    assert clean is not None
    save_model(args.out, target, {"model": args.model, "stage": "target:gradpc", "eps_w": str(info["eps_w"])})
    summary = {
        "dataset": args.dataset, "model": args.model, "out": args.out,
        "clean_test_accuracy": accuracy(clean, prep.bundle.test),
        "target_test_accuracy": accuracy(target, prep.bundle.test),
        **{k: info[k] for k in ("eps_w", "norm", "topk", "radius", "relative_change", "nonzeros", "val_loss_clean",
                                "val_loss_target", "seconds")},
        "cache": info.get("cache"),  # "hit": the target (and its seconds) come from an earlier build
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(("", "value"), list(summary.items())))
    load_state(args.out)  # written and readable
    return 0
