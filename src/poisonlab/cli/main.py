"""``poisonlab`` command line. Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``.

Commands are registered in :data:`COMMANDS` (name -> module, one-line help) and imported lazily:
only the chosen command's module is imported, so ``poisonlab --version`` and ``poisonlab --help``
load no torch. The CLI is the one place that sets the process environment (:func:`main`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Iterable, NoReturn, Sequence

from .._version import __version__
from ..errors import PoisonlabError

#: command name -> (module defining ``add_parser`` / ``run``, the one-line help of ``poisonlab --help``;
#: the module's own ``help=`` must say the same, tests/test_cli_startup.py checks). To add a command,
#: add one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("poisonlab.cli.run_cmd", "run pretrain -> attack -> test once (default: digits / lr / label_flip / 0.03)"),
    "list": ("poisonlab.cli.list_cmd", "list registered datasets, models, generators and attacks"),
    "datasets": ("poisonlab.cli.datasets_cmd", "list datasets and verify local files (counts, checksums)"),
    "threshold": ("poisonlab.cli.threshold_cmd", "reachability threshold τ of a target model (GradPC, reachable or a file)"),
    "target": ("poisonlab.cli.target_cmd", "make a target model (GradPC or the reachable target) and save it"),
    "transfer": ("poisonlab.cli.transfer_cmd", "transferability matrix: craft against surrogates, retrain targets"),
    "sweep": ("poisonlab.cli.sweep_cmd", "run a YAML grid of configs (resumable; local processes or Ray)"),
    "evaluate": ("poisonlab.cli.evaluate_cmd", "worst case over the attacks, defenses, thresholds -> an HTML report"),
    "report": ("poisonlab.cli.report_cmd", "tables (md/csv/latex) and figures from a sweep's results.jsonl"),
    "cache": ("poisonlab.cli.cache_cmd", "list or clear cached artifacts (clean victims, targets, generators)"),
    "disguise": ("poisonlab.cli.disguise_cmd",
                 "craft a disguise of a copyrighted image (latent diffusion), reveal and score it"),
    "vae": ("poisonlab.cli.vae_cmd", "train / cache the small AutoencoderKL for the disguise commands"),
    "pretrain": ("poisonlab.cli.pretrain_cmd", "pre-train a feature extractor (SimCLR / supervised), cached as safetensors"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit code 2 with a one-line message (argparse default too)
        self.print_usage(sys.stderr)
        self.exit(2, f"poisonlab: error: {message}\n")


def build_parser(load: Iterable[str] = ()) -> argparse.ArgumentParser:
    """The parser with the full sub-parsers of the commands in ``load`` (their modules imported) and
    a one-line placeholder for every other command (enough for ``poisonlab --help``)."""
    load = set(load)
    parser = _Parser(prog="poisonlab", description="Poison a model under a fixed protocol, measure the damage, try defenses.")
    parser.add_argument("--version", action="version", version=f"poisonlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_line) in COMMANDS.items():
        if name in load:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command named on the line: its first word that is not an option (None if not a command)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _set_process_environment() -> None:
    """The CLI's settings for the process, made before torch is imported (the command modules import it)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see README: avoids 20-70x slowdowns on busy CPUs


def main(argv: Sequence[str] | None = None) -> int:
    _set_process_environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(argv)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except PoisonlabError as exc:
        print(f"poisonlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("poisonlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
