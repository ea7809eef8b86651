"""``poisonlab transfer``: poisons crafted against each surrogate, judged on each target (thesis Table 2.9)."""

from __future__ import annotations

import argparse

from ..api import RunSpec, transfer
from ..errors import ConfigError
from ..reporting import transfer_table
from .key_values import parse_key_values
from .recipe_flags import add_recipe_args, recipe_args
from .run_cmd import print_result


def add_parser(sub) -> None:
    p = sub.add_parser("transfer", help="transferability matrix: craft against surrogates, retrain targets",
                       description="Craft poisons against each surrogate model and measure each target's accuracy "
                                   "drop when retrained on them. Flags override keys of --config FILE.yaml.")
    p.add_argument("--surrogates", default="lr,nn,cnn", help="comma-separated models the attack is crafted against")
    p.add_argument("--targets", default="lr,nn,cnn", help="comma-separated models that are retrained on the poisons")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file with run keys (dataset, attack, fraction, ...)")
    p.add_argument("--dataset")
    p.add_argument("--attack")
    p.add_argument("--fraction", type=float)
    p.add_argument("--seed", type=int)
    add_recipe_args(p, note=" (every surrogate and target)")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.add_argument("--out", help="output directory (default runs/transfer-<dataset>-<attack>-f<fraction>-s<seed>)")
    p.add_argument("--attack-option", "-A", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--model-option", "-M", action="append", default=[], metavar="[MODEL:]KEY=VALUE",
                   help="model option, e.g. -M nn:hidden=[256,256] (without MODEL: applies to every model)")
    p.add_argument("--json", action="store_true", help="print transfer.json instead of the table")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=run)


def _names(text: str, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--{what} needs at least one model name")
    return names


def per_model_options(items: list[str], models: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {m: {} for m in models}
    for item in items:
        head, sep, rest = item.partition("=")
        model, colon, key = head.rpartition(":")
        for m in ([model] if colon else models):
            if m not in out:
                raise ConfigError(f"model option {item!r}: {m!r} is neither a surrogate nor a target")
            out[m].update(parse_key_values([f"{key}{sep}{rest}"], "model option"))
    return out


def run(args: argparse.Namespace) -> int:
    base = RunSpec.from_yaml(args.config) if args.config else RunSpec()
    base = base.merged(dataset=args.dataset, attack=args.attack, fraction=args.fraction, seed=args.seed,
                       data_dir=args.data_dir, device=args.device, **recipe_args(args))
    attack_opts = parse_key_values(args.attack_option, "attack option")
    if attack_opts:
        base = base.merged(attack_options={**base.attack_options, **attack_opts})
    surrogates, targets = _names(args.surrogates, "surrogates"), _names(args.targets, "targets")
    models = list(dict.fromkeys([*surrogates, *targets]))
    opts = per_model_options(args.model_option, models)
    quiet = args.quiet or args.json
    log = (lambda _m: None) if quiet else (lambda m: print(m, flush=True))
    result = transfer(base, surrogates, targets, model_options=opts, out=args.out, progress=not quiet, log=log)
    return print_result(result, args.json, lambda: f"{transfer_table(result)}\n\nrecord in {result['config']['out']}/transfer.json")
