"""poisonlab evaluate (pl.evaluate): run every applicable attack (or --attacks) over --seeds, the
defenses against the two most damaging, and the reachability thresholds; write report.md,
report.json, report.html and results.jsonl into --out. Rerun the same command to resume (also after
kill -9)."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..errors import ConfigError
from .grid_flags import GridHelp, add_grid_args
from .key_values import parse_key_values
from .recipe_flags import recipe_args

#: what the shared grid flags do in an evaluation
FLAGS = GridHelp(workers="default: every cell in this process", ray="default: one per CPU",
                 cache="clean victims and targets (default OUT/cache)", device="auto (default), cpu or cuda")


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="worst case over the attacks, defenses, thresholds -> an HTML report",
                       description=__doc__)
    p.add_argument("--dataset", required=True, help="registered name (see `poisonlab list`) or a path to an .npz file")
    p.add_argument("--model", default="lr", help="victim architecture (default lr)")
    p.add_argument("--fraction", type=float, default=0.03, help="poison fraction of |D_tr| in [0, 1] (default 0.03)")
    p.add_argument("--attacks", default="auto", help="comma-separated attack names, or auto (default: every attack "
                   "that applies; with --reference: the reference's suite)")
    p.add_argument("--defenses", default="auto", help="comma-separated defense names, auto (default) or none")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--time-budget", type=float, help="seconds for the whole evaluation: attacks are priced first, decided "
                   "cheapest first, shortened or skipped (and said so) when they would not fit, run longest first")
    p.add_argument("--model-option", "-M", action="append", default=[], metavar="KEY=VALUE",
                   help="model option (repeatable), e.g. -M hidden=[256,128]")
    p.add_argument("--attack-option", "-A", action="append", default=[], metavar="ATTACK.KEY=VALUE",
                   help="an option of one attack (repeatable), e.g. -A gc.steps=50 -A min_max.epochs=5")
    p.add_argument("--defense-option", "-D", action="append", default=[], metavar="DEFENSE.KEY=VALUE",
                   help="an option of one defense (repeatable), e.g. -D sphere.fraction=0.05")
    p.add_argument("--reference", choices=("thesis-table-2.2",), help="add a column of published numbers "
                   "(thesis-table-2.2: MNIST LR / NN, ε = 3 %%)")
    p.add_argument("--data-dir", help="where dataset files live (default $POISONLAB_DATA or ~/.cache/poisonlab/data)")
    p.add_argument("--out", required=True, help="directory of results.jsonl, the cells' artifacts and the reports")
    add_grid_args(p, FLAGS)
    p.set_defaults(handler=run)


def _names(text: str, what: str) -> list[str] | str | None:
    text = text.strip()
    if text == "auto":
        return "auto"
    if text in ("none", ""):
        return None
    return [s.strip() for s in text.split(",") if s.strip()]


def _per_component(items: list[str], flag: str) -> dict[str, dict]:
    """``["gc.steps=50"]`` -> ``{"gc": {"steps": 50}}``."""
    out: dict[str, dict] = {}
    for key, value in parse_key_values(items, flag).items():
        name, dot, option = key.partition(".")
        if not dot or not name or not option:
            raise ConfigError(f"{flag} {key}=...: write NAME.OPTION=VALUE, e.g. gc.steps=50")
        out.setdefault(name, {})[option] = value
    return out


def _with_options(names: list[str] | str | None, options: dict[str, dict], flag: str, known) -> object:
    """The names as a mapping name -> options when some options were given."""
    if not options:
        return names
    if names is None:
        raise ConfigError(f"{flag} given, but nothing of that kind is evaluated")
    listed = list(known() if names == "auto" else names)
    extra = sorted(set(options) - set(listed))
    if extra:
        raise ConfigError(f"{flag}: {', '.join(extra)} not among the evaluated names ({', '.join(listed)})")
    return {n: options.get(n, {}) for n in listed}


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip() != "")
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..attacks import ATTACKS
    from ..defenses import DEFENSES
    from ..evaluation import evaluate
    from ..evaluation.references import reference

    attack_opts = _per_component(args.attack_option, "--attack-option")
    if attack_opts and args.attacks.strip() == "auto" and args.reference:
        suite = reference(args.reference, args.model).attacks
        extra = sorted(set(attack_opts) - set(suite))
        if extra:
            raise ConfigError(f"--attack-option: {', '.join(extra)} not among the evaluated names ({', '.join(suite)})")
        attacks: object = {n: {"attack": a, **o, **attack_opts.get(n, {})} for n, (a, o) in suite.items()}
    else:
        attacks = _with_options(_names(args.attacks, "--attacks"), attack_opts, "--attack-option", ATTACKS.names)
    defenses = _with_options(_names(args.defenses, "--defenses"), _per_component(args.defense_option, "--defense-option"),
                             "--defense-option", DEFENSES.names)
    victim = api.victim(args.model, device=args.device or "auto", options=parse_key_values(args.model_option, "model option") or None,
                        **recipe_args(args))
    ev = evaluate(args.dataset, victim, args.fraction, attacks=attacks, defenses=defenses, seeds=_seeds(args.seeds),
                  time_budget=args.time_budget, backend=args.backend, workers=args.workers, out=args.out,
                  cache=args.cache_dir, progress=not args.quiet, reference=args.reference, data_dir=args.data_dir,
                  command="poisonlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["evaluate"]
                  else None)
    print("\n".join(ev.to_markdown().split("\n## ")[0].splitlines()[2:]).strip())
    print(f"reports: {args.out}/report.md, report.json, report.html; cells: {args.out}/results.jsonl")
    return 0
