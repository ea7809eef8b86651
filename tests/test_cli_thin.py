"""The CLI is a thin layer over ``pl.*`` (issue 27): no command module imports the protocol, the attacks,
the training loop, a sweeps submodule, the generative models, the pre-training or the models — only the
registries and name lists, and the ``poisonlab.sweeps`` package's public names — and the commands built
on ``pl.run_spec`` / ``pl.make_target`` / ``pl.threshold_spec`` / ``pl.transfer`` still work end to end
(``disguise``, ``vae`` and ``pretrain``, on ``pl.disguise`` / ``pl.train_vae`` / ``pl.pretrain_extractor``,
are run end to end in their own test files)."""

import ast
import json
from pathlib import Path

import pytest
import yaml

import poisonlab
from poisonlab.cli.main import main

CLI = Path(poisonlab.__file__).parent / "cli"
#: the layers below ``api`` that a command may not reach into, and what of them it may import: the
#: registries and name lists (``--attack``, ``--target``, ``--optimizer``, ``--method`` choices,
#: ``poisonlab list``) and the sweeps package's own public names (``load_grid``, ``plan``, ``run_sweep``, ...)
FORBIDDEN = ("poisonlab.protocol", "poisonlab.attacks", "poisonlab.training", "poisonlab.sweeps", "poisonlab.generative",
             "poisonlab.pretrain", "poisonlab.models")
ALLOWED: dict[str, set[str] | None] = {
    "poisonlab.attacks": {"ATTACKS"},
    "poisonlab.attacks.targets": {"TARGETS"},
    "poisonlab.training.loop": {"OPTIMIZERS", "SCHEDULES"},
    "poisonlab.sweeps": None,  # None: any public name of the package (not its submodules)
    "poisonlab.models": {"GENERATORS", "VICTIMS"},
    "poisonlab.pretrain.store": {"METHODS"},
}


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(absolute module, imported name or "", line) of every import in ``path``, lazy ones too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # a module of poisonlab.cli: level 1 is poisonlab.cli, 2 is poisonlab
                base = ["poisonlab", "cli"][: 3 - node.level]
                module = ".".join(base + ([module] if module else []))
            out += [(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, "", node.lineno) for alias in node.names]
    return out


def _violations(path: Path) -> list[str]:
    bad = []
    for module, name, line in _imports(path):
        full = f"{module}.{name}" if name else module
        reached = next((f for f in FORBIDDEN if full == f or full.startswith(f + ".")), None)
        if reached is None:
            continue
        allowed = ALLOWED.get(module, set())
        if name and not name.startswith("_") and (allowed is None or name in allowed):
            continue
        bad.append(f"{path.name}:{line} imports {full}")
    return bad


def test_the_check_sees_what_it_forbids(tmp_path):
    """The walker flags relative, absolute and lazy imports of the internals, and passes the registries."""
    src = tmp_path / "x_cmd.py"
    src.write_text("from ..protocol import RunSpec\nimport poisonlab.training\nfrom ..sweeps.grid import expand\n"
                   "def f():\n    from ..attacks.gradpc import GradPCConfig\n"
                   "from ..attacks import ATTACKS\nfrom ..attacks.targets import TARGETS\nfrom ..sweeps import run_sweep\n"
                   "from ..api import run_spec\nfrom .. import api\n"
                   "def g():\n    from ..generative.vae import get_vae\n    import poisonlab.pretrain\n"
                   "from ..pretrain import PretrainConfig\nfrom ..models.pretrained.taef2 import weight_dir\n"
                   "from ..models import VICTIMS\nfrom ..pretrain.store import METHODS\nfrom ..api import disguise\n")
    by_line = sorted(_violations(src), key=lambda v: int(v.split(":")[1].split()[0]))  # ast.walk is breadth-first
    assert by_line == ["x_cmd.py:1 imports poisonlab.protocol.RunSpec", "x_cmd.py:2 imports poisonlab.training",
                       "x_cmd.py:3 imports poisonlab.sweeps.grid.expand",
                       "x_cmd.py:5 imports poisonlab.attacks.gradpc.GradPCConfig",
                       "x_cmd.py:12 imports poisonlab.generative.vae.get_vae", "x_cmd.py:13 imports poisonlab.pretrain",
                       "x_cmd.py:14 imports poisonlab.pretrain.PretrainConfig",
                       "x_cmd.py:15 imports poisonlab.models.pretrained.taef2.weight_dir"]


def test_no_command_imports_the_layers_below_the_api():
    files = sorted(CLI.glob("*.py"))
    assert len(files) > 10
    bad = [v for path in files for v in _violations(path)]
    assert not bad, "CLI modules importing below the API (use a pl.* function):\n" + "\n".join(bad)


EPOCHS = ["--epochs", "2", "--device", "cpu"]


def test_run_target_threshold_transfer_and_sweep_end_to_end(tmp_path, capsys):
    """Each command on digits / lr with 2 epochs: exit 0 and a record that agrees with the library's."""
    out = tmp_path / "run"
    assert main(["run", "--dataset", "digits", "--model", "lr", "--attack", "label_flip", "--fraction", "0.05",
                 *EPOCHS, "--out", str(out), "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    lib = poisonlab.run_spec(poisonlab.RunSpec(dataset="digits", model="lr", attack="label_flip", fraction=0.05, epochs=2,
                                               device="cpu", out=str(tmp_path / "lib")), progress=False)
    assert record["accuracy_drop"] == pytest.approx(lib.accuracy_drop) and record["n_poison"] == lib.n_poison > 0
    assert (out / "result.json").is_file()

    target = tmp_path / "t.safetensors"
    assert main(["target", "--target", "gradpc", "--eps-w", "0.5", "--pc-steps", "3", *EPOCHS, "--out", str(target),
                 "--json", "--quiet"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert target.is_file() and made["out"] == str(target)
    assert made["target_test_accuracy"] < made["clean_test_accuracy"]  # GradPC corrupts the clean victim

    assert main(["threshold", "--target", str(target), "--fraction", "0.05", *EPOCHS, "--json", "--quiet"]) == 0
    th = json.loads(capsys.readouterr().out)
    assert th["target_info"] == {"source": str(target), "cache": None}
    assert th["target_test_accuracy"] == pytest.approx(made["target_test_accuracy"])
    assert th["n_poisons_at_fraction"] == record["n_poison"]

    assert main(["transfer", "--surrogates", "lr", "--targets", "lr", "--dataset", "digits", "--attack", "label_flip",
                 "--fraction", "0.05", *EPOCHS, "--out", str(tmp_path / "tr"), "--json", "--quiet"]) == 0
    tr = json.loads(capsys.readouterr().out)
    assert tr["accuracy_drop"]["lr"]["lr"] == pytest.approx(lib.accuracy_drop)  # the diagonal is the white-box run

    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "one", "base": {"dataset": "digits", "model": "lr", "attack": "label_flip",
                                                            "fraction": 0.05, "device": "cpu"}}))
    assert main(["sweep", str(grid), "--out", str(tmp_path / "sw"), "--workers", "0", "--quiet", "--no-cache",
                 "--epochs", "2"]) == 0
    assert "1 runs" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "sw" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["status"] == "ok"


def test_the_spec_functions_check_their_arguments_before_any_work(tmp_path):
    from poisonlab.errors import ConfigError

    with pytest.raises(ConfigError, match="expected a poisonlab.RunSpec"):
        poisonlab.run_spec({"dataset": "digits"})  # type: ignore[arg-type]
    spec = poisonlab.RunSpec(dataset=str(tmp_path / "missing.npz"))  # loading it would fail differently
    with pytest.raises(ConfigError, match="unknown target 'nope'"):
        poisonlab.make_target(spec, "nope")
    with pytest.raises(ConfigError, match="not read from a file"):
        poisonlab.make_target(spec, "saved.safetensors")
    with pytest.raises(ConfigError, match="no such file"):
        poisonlab.threshold_spec(spec, str(tmp_path / "none.safetensors"))
    with pytest.raises(ConfigError, match="fraction"):
        poisonlab.threshold_spec(spec, "gradpc", fraction=0.0)
    with pytest.raises(ConfigError, match="unknown option"):
        poisonlab.make_target(spec, "gradpc", options={"nope": 1})
    with pytest.raises(ConfigError):
        poisonlab.transfer(spec, ["lr"], ["no_such_model"])


def test_sweep_and_evaluate_take_the_same_grid_flags_with_the_same_meaning():
    """The flags both grid commands share (cli/grid_flags.py) parse to the same values in both."""
    from poisonlab.cli.main import build_parser

    shared = ["--backend", "ray", "--workers", "3", "--device", "cpu", "--cache-dir", "C", "--quiet",
              "--epochs", "5", "--optimizer", "adam", "--no-nesterov"]
    sweep = build_parser(["sweep"]).parse_args(["sweep", "grid.yaml", *shared])
    ev = build_parser(["evaluate"]).parse_args(["evaluate", "--dataset", "digits", "--out", "o", *shared])
    keys = ("backend", "workers", "device", "cache_dir", "quiet", "epochs", "optimizer", "nesterov", "lr")
    assert {k: getattr(sweep, k) for k in keys} == {k: getattr(ev, k) for k in keys} == {
        "backend": "ray", "workers": 3, "device": "cpu", "cache_dir": "C", "quiet": True, "epochs": 5,
        "optimizer": "adam", "nesterov": False, "lr": None}
    # without the flags: the same defaults (evaluate's device None means auto, as the victim reads it)
    sweep = build_parser(["sweep"]).parse_args(["sweep", "grid.yaml"])
    ev = build_parser(["evaluate"]).parse_args(["evaluate", "--dataset", "digits", "--out", "o"])
    assert {k: getattr(sweep, k) for k in keys} == {k: getattr(ev, k) for k in keys}
