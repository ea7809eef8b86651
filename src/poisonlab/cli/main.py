"""``poisonlab`` command line. Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see README: avoids 20-70x slowdowns on busy CPUs

from .._version import __version__  # noqa: E402
from ..errors import PoisonlabError  # noqa: E402
from . import (  # noqa: E402
    cache_cmd,
    datasets_cmd,
    disguise_cmd,
    list_cmd,
    pretrain_cmd,  # noqa: E402
    report_cmd,
    run_cmd,
    sweep_cmd,
    target_cmd,
    threshold_cmd,
    transfer_cmd,
    vae_cmd,
)

COMMANDS = [run_cmd, list_cmd, datasets_cmd, threshold_cmd, target_cmd, transfer_cmd, sweep_cmd, report_cmd, cache_cmd,
            disguise_cmd, vae_cmd]
COMMANDS.append(pretrain_cmd)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit code 2 with a one-line message (argparse default too)
        self.print_usage(sys.stderr)
        self.exit(2, f"poisonlab: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="poisonlab", description="Poison a model under a fixed protocol, measure the damage, try defenses.")
    parser.add_argument("--version", action="version", version=f"poisonlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
