"""The CLI's first contact: ``--version`` and ``--help`` import no torch, a command imports only its
own module, and the CLI (alone) sets the process environment, inside ``main``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from poisonlab.cli.main import COMMANDS, build_parser, chosen_command

PROBE = """
import json, os, sys
from poisonlab.cli.main import main
before = os.environ.get("OMP_WAIT_POLICY")
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(json.dumps({"rc": rc, "before": before, "after": os.environ.get("OMP_WAIT_POLICY"),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn", "scipy", "poisonlab"))}))
"""


def _probe(*argv: str, env: dict[str, str] | None = None) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                         env={**base, **(env or {})}, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_version_and_help_import_no_torch(argv):
    got = _probe(*argv)
    assert got["rc"] in (0, 2)
    heavy = [m for m in got["modules"] if m.split(".")[0] in ("torch", "sklearn", "scipy")]
    assert not heavy, f"poisonlab {' '.join(argv)} imported {heavy[:5]}"
    assert not any(m.startswith("poisonlab.cli.") and m.endswith("_cmd") for m in got["modules"])


def test_a_command_imports_only_its_own_module(tmp_path):
    got = _probe("cache", "ls", "--cache-dir", str(tmp_path))
    assert got["rc"] == 0
    cmds = sorted(m for m in got["modules"] if m.startswith("poisonlab.cli.") and m.endswith("_cmd"))
    assert cmds == ["poisonlab.cli.cache_cmd"]


def test_the_cli_sets_omp_wait_policy_in_main_not_at_import():
    got = _probe("--version")
    assert (got["before"], got["after"]) == (None, "PASSIVE")  # set by main(), before any torch import
    assert _probe("--version", env={"OMP_WAIT_POLICY": "ACTIVE"})["after"] == "ACTIVE"  # the user's choice stays


def test_the_table_matches_the_modules():
    """Every row of COMMANDS names a module that registers exactly that command, with the help
    line the table shows in ``poisonlab --help``."""
    parser = build_parser(COMMANDS)
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert list(sub.choices) == list(COMMANDS)
    shown = {a.dest: a.help for a in sub._choices_actions}
    assert shown == {name: help_line for name, (_, help_line) in COMMANDS.items()}
    for name, p in sub.choices.items():
        assert p.get_default("handler") is not None, f"{name}: its module's add_parser sets no handler"


def test_chosen_command():
    assert chosen_command(["run", "--dataset", "mnist"]) == "run"
    assert chosen_command(["--version"]) is None and chosen_command([]) is None
    assert chosen_command(["nonsense"]) is None and chosen_command(["--", "run"]) is None


def test_placeholders_keep_help_and_errors(capsys):
    from poisonlab.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
