"""``poisonlab target``: train the clean victim, make a target from it with a registered maker (GradPC,
the reachable target, a plugin's), save it.

Also the flags and the validation that ``target`` and ``threshold`` share (:func:`add_target_command`,
:func:`target_options`); the work is :func:`poisonlab.make_target` (``threshold``:
:func:`poisonlab.threshold_spec`). The target (safetensors) feeds ``poisonlab threshold --target FILE``
and ``poisonlab run --attack gc --target FILE``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..api import RunSpec, make_target
from ..attacks.targets import TARGETS
from ..errors import ConfigError
from ..reporting import format_table
from .recipe_flags import add_recipe_args, recipe_args

#: THE command-line shortcuts for GradPC's options (:class:`~poisonlab.attacks.gradpc.GradPCConfig`, the
#: config of the registered maker ``gradpc``):
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
    defaults = TARGETS.get("gradpc").Config()
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
    add_recipe_args(p)
    p.add_argument("--data-dir", help="where dataset files live (default $POISONLAB_DATA)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--clean", metavar="FILE.safetensors", help="clean victim weights to start from (e.g. a run's "
                   "victim_clean.safetensors, same dataset/seed) instead of training it")
    add_gradpc_args(p)
    p.add_argument("--cache-dir", help="re-use / store the clean victim and the target (gradpc, reachable) in this artifact cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run_config(args: argparse.Namespace) -> RunSpec:
    return RunSpec(dataset=args.dataset, model=args.model, seed=args.seed, data_dir=args.data_dir, device=args.device,
                     cache_dir=args.cache_dir, **recipe_args(args))


def add_target_args(p: argparse.ArgumentParser) -> None:
    """``--target``, ``--fraction`` and ``--target-option`` / ``-T`` (the maker's options), shared by
    ``target`` and ``threshold``."""
    p.add_argument("--target", default="gradpc", metavar="MAKER|FILE.safetensors",
                   help="a registered target maker (see `poisonlab list`): gradpc (default: GradPC, parameter "
                        "corruption), reachable (linear softmax victims: the most damaging target found with "
                        "τ_gauge ≤ limit·ε at ε = --fraction) or a plugin's; or a saved target .safetensors file "
                        "(threshold only)")
    p.add_argument("--fraction", type=float, default=0.03,
                   help="poison fraction ε in (0, 1]: the one threshold checks and the one target 'reachable' is made "
                        "for (default 0.03)")
    p.add_argument("--target-option", "-T", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the target maker (repeatable, value parsed as YAML), e.g. -T steps=60 or, as in "
                        "run's -A, -T reachable.steps=60; the options are the maker's config: gradpc: GradPCConfig "
                        "(over the GradPC flags), reachable: ReachableConfig (fraction, limit, band, steps, step, "
                        "chunk_size)")


def add_target_command(sub, name: str, *, help: str, description: str, handler) -> argparse.ArgumentParser:
    """The subcommand ``name`` over one target model: :func:`add_victim_args`, :func:`add_target_args`
    and ``handler``; the caller adds the command's own flags to the parser returned."""
    p = sub.add_parser(name, help=help, description=description)
    add_victim_args(p)
    add_target_args(p)
    p.set_defaults(handler=handler)
    return p


def target_options(args: argparse.Namespace, *, files: bool = True) -> dict[str, Any]:
    """The maker options of ``args.target``, checked before any work (data, training).

    ``--target`` must be a registered maker (:data:`~poisonlab.attacks.targets.TARGETS`, plugins
    included) or, with ``files``, an existing ``.safetensors`` file; ``--fraction`` in (0, 1]; the
    GradPC flags apply to ``gradpc`` only; ``-T`` keys (bare or ``<maker>.KEY``) must be options of the
    maker (its config class). A ``-T`` key wins over the GradPC flag of the same option. Raises
    :class:`~poisonlab.errors.ConfigError`."""
    from ..validation import check_fraction
    from .key_values import parse_key_values

    target = args.target
    check_fraction(args.fraction, "--fraction")
    if not args.fraction > 0:
        raise ConfigError(f"--fraction must be > 0, got {args.fraction!r}")
    given = parse_key_values(args.target_option, "target option")
    flags = gradpc_options(args)
    if target.endswith(".safetensors"):  # a saved target
        if not files:
            raise ConfigError(f"--target {target}: this command makes a target ({', '.join(TARGETS.names())}); "
                              "a saved target goes to 'poisonlab threshold --target FILE' or 'poisonlab run --target FILE'")
        if not Path(target).is_file():
            raise ConfigError(f"--target {target}: no such file")
        if given or flags:
            raise ConfigError(f"--target {target}: a saved target takes no maker options (-T, --eps-w, --pc-*)")
        return {}
    if target not in TARGETS:
        raise ConfigError(f"unknown --target {target!r}: give a target maker ({', '.join(TARGETS.names())})"
                          + (" or a .safetensors file" if files else ""))
    if flags and target != "gradpc":
        raise ConfigError(f"--target {target}: the GradPC flags (--eps-w, --pc-*) configure target 'gradpc' only; "
                          f"give {target}'s options as -T KEY=VALUE")
    options = dict(flags)
    for key, value in given.items():
        maker, dot, rest = key.partition(".")
        if dot and maker in TARGETS:
            if maker != target:
                raise ConfigError(f"target option {key!r} is for target {maker!r}, not --target {target}")
            key = rest
        options[key] = value
    TARGETS.get(target)(**options)  # unknown keys, bad values
    return options


def add_parser(sub) -> None:
    p = add_target_command(
        sub, "target", handler=run, help="make a target model (GradPC or the reachable target) and save it",
        description="Train the clean victim (or load --clean), make the target from it with a registered maker — "
                    "GradPC (max validation loss, ‖Δw‖ ≤ eps_w‖w‖), reachable (min validation accuracy, "
                    "τ_gauge ≤ limit·ε) or a plugin's — and save it as safetensors.")
    p.add_argument("--out", default="target.safetensors", help="where to save the target (default target.safetensors)")


def run(args: argparse.Namespace) -> int:
    options = target_options(args, files=False)
    summary = make_target(run_config(args), args.target, fraction=args.fraction, options=options, clean=args.clean,
                          out=args.out, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(("", "value"), list(summary.items())))
    return 0
