"""``poisonlab run``: the pretrain → attack → test protocol on one configuration."""

from __future__ import annotations

import argparse
import json
from typing import Callable

from ..api import RunSpec, run_spec
from ..reporting import result_table
from .key_values import parse_key_values
from .recipe_flags import add_recipe_args, recipe_args
from .target_cmd import add_gradpc_args, gradpc_options


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run pretrain -> attack -> test once (default: digits / lr / label_flip / 0.03)",
                       description="Run the three-stage protocol. Flags override keys of --config FILE.yaml.")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file whose keys mirror these flags")
    p.add_argument("--dataset", help="registered name (see `poisonlab list`) or a path to an .npz file")
    p.add_argument("--model", help="victim: lr, nn, cnn, resnet18, linear_probe:<extractor>, fine_tune:<extractor>")
    p.add_argument("--attack", help="attack name (see `poisonlab list`)")
    p.add_argument("--fraction", type=float, help="poison fraction of |D_tr| in [0, 1] (default 0.03)")
    p.add_argument("--injection", choices=["add", "replace"],
                   help="test stage: add the poisons to D_tr (default) or put each in place of its source point")
    p.add_argument("--seed", type=int)
    add_recipe_args(p)
    p.add_argument("--data-dir", help="where dataset files live (default $POISONLAB_DATA or ~/.cache/poisonlab/data)")
    p.add_argument("--out", help="output directory (default runs/<dataset>-<model>-<attack>-f<fraction>-s<seed>)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--poisons", help="re-use poisons.npz from an earlier run instead of attacking")
    p.add_argument("--defense", help="defend stage after the test stage (see `poisonlab list`): score, filter, retrain")
    p.add_argument("--defense-option", "-D", action="append", default=[], metavar="KEY=VALUE",
                   help="defense option (repeatable), e.g. -D fraction=0.05 -D rounds=3")
    p.add_argument("--cache-dir", help="re-use / store the clean-trained victim in this cache (see `poisonlab cache ls`)")
    p.add_argument("--attack-option", "-A", action="append", default=[], metavar="KEY=VALUE",
                   help="attack option (repeatable), value parsed as YAML, e.g. -A mode=random")
    p.add_argument("--model-option", "-M", action="append", default=[], metavar="KEY=VALUE",
                   help="model option (repeatable), e.g. -M hidden=[256,128]")
    p.add_argument("--target", help="model-targeted attacks (gc): 'gradpc', 'reachable' (linear victims) or a .safetensors (-A target=...)")
    add_gradpc_args(p, aliases=False, what="gc / feature_targeted (= -A target_options.<option>=...): ")
    p.add_argument("--json", action="store_true", help="print the result record as JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
    p.set_defaults(handler=run)


def print_result(record: dict, as_json: bool, text: Callable[[], str]) -> int:
    """Print a command's result: ``record`` as JSON (``--json``; values JSON lacks as strings), else
    ``text()``. Returns the command's exit code, 0."""
    print(json.dumps(record, indent=2, default=str) if as_json else text())
    return 0


def _gradpc_shortcuts(given: dict, attack_opts: dict) -> None:
    """Put the GradPC flags (``--eps-w``, ``--pc-steps``, ...) into ``attack_opts`` as
    ``target_options.<option>``, the GradPC group of gc, gradient_matching and feature_targeted (an
    attack without it rejects the option, listing its own). Precedence: ``-A`` > the flags > the YAML."""
    group = attack_opts.get("target_options")
    for name, value in given.items():
        if f"target_options.{name}" not in attack_opts and not (isinstance(group, dict) and name in group):
            attack_opts[f"target_options.{name}"] = value  # -A did not say it


def config_from_args(args: argparse.Namespace) -> RunSpec:
    base = RunSpec.from_yaml(args.config) if args.config else RunSpec()
    cfg = base.merged(
        dataset=args.dataset, model=args.model, attack=args.attack, fraction=args.fraction, seed=args.seed,
        data_dir=args.data_dir, out=args.out, device=args.device, poisons=args.poisons, defense=args.defense,
        cache_dir=args.cache_dir, injection=getattr(args, "injection", None), **recipe_args(args),
    )
    attack_opts = parse_key_values(args.attack_option, "attack option")
    if getattr(args, "target", None) is not None:
        attack_opts.setdefault("target", args.target)
    _gradpc_shortcuts(gradpc_options(args), attack_opts)
    model_opts = parse_key_values(args.model_option, "model option")
    defense_opts = parse_key_values(args.defense_option, "defense option")
    if attack_opts:
        cfg = cfg.merged(attack_options={**cfg.attack_options, **attack_opts})
    if model_opts:
        cfg = cfg.merged(model_options={**cfg.model_options, **model_opts})
    if defense_opts:
        cfg = cfg.merged(defense_options={**cfg.defense_options, **defense_opts})
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = run_spec(cfg, progress=not (args.quiet or args.json)).to_dict()
    return print_result(result, args.json, lambda: f"{result_table(result)}\n\nartifacts in {result['config']['out']}/ "
                                                   "(result.json, poisons.npz, poisons.png, victim_*.safetensors)")
