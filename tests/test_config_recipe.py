"""The run config carries the victim's whole training recipe: YAML, ``poisonlab run`` / ``sweep``
flags, sweeps, and the record ``pl.run`` writes read back (a saved run defended again)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import yaml

import poisonlab as pl
from poisonlab.cli.main import main
from poisonlab.cli.recipe_flags import RECIPE_FLAGS, add_recipe_args, recipe_args
from poisonlab.cli.run_cmd import config_from_args
from poisonlab.data import load_dataset
from poisonlab.errors import ConfigError
from poisonlab.protocol import RunSpec, load_poisons
from poisonlab.protocol.config import RECIPE_KEYS
from poisonlab.sweeps import ResultsLog
from poisonlab.sweeps import load_grid as load_grid_on
from poisonlab.training import TrainConfig

ADAMW = {"optimizer": "adamw", "schedule": "cosine", "weight_decay": 0.01, "lr": 0.001}
DIGITS_BATCH = 64  # the digits set's default batch size (checked below)


def test_every_recipe_field_is_a_run_key_and_a_flag():
    recipe = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(RECIPE_KEYS) == recipe - {"device"}
    assert recipe <= {f.name for f in dataclasses.fields(RunSpec)}  # the device is the run's own key
    assert {name for _, name, _, _ in RECIPE_FLAGS} == set(RECIPE_KEYS)


def test_recipe_from_the_config_defaults_and_checks():
    assert RunSpec().recipe(1000) == TrainConfig(batch_size=1000)
    cfg = RunSpec(**ADAMW, epochs=3, device="cpu")
    assert cfg.recipe(64) == TrainConfig(**ADAMW, epochs=3, batch_size=64, device="cpu")
    step = RunSpec(schedule="step", step_size=2, gamma=0.5, momentum=0.9, nesterov=True).recipe(10)
    assert (step.schedule, step.step_size, step.gamma, step.momentum, step.nesterov) == ("step", 2, 0.5, 0.9, True)
    for bad, needle in (({"optimizer": "adam", "momentum": 0.9}, "momentum applies to optimizer 'sgd' only"),
                        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
                        ({"gamma": 0.5}, "gamma applies to schedule 'step' only"),
                        ({"nesterov": True}, "nesterov=True needs momentum"),
                        ({"weight_decay": -1.0}, "weight_decay")):
        with pytest.raises(ConfigError, match=needle):
            RunSpec(**bad)
    with pytest.raises(ConfigError, match="unknown option"):
        RunSpec.from_dict({"optimiser": "adam"})


def test_from_dict_reads_a_records_recipe_and_rejects_a_contradiction():
    record = {"dataset": "digits", "model": "lr", "epochs": 2, "recipe_description": "adamw lr 0.001, ...",
              "bounds": "[0, 16]", "recipe": {**ADAMW, "epochs": 2, "batch_size": 1000, "momentum": 0.0,
                                              "nesterov": False, "step_size": None, "gamma": 0.1}}
    cfg = RunSpec.from_dict(record)
    assert cfg.recipe(1000) == TrainConfig(**ADAMW, epochs=2, batch_size=1000)
    assert RunSpec.from_dict({"recipe.optimizer": "adam"}).optimizer == "adam"
    with pytest.raises(ConfigError, match="epochs is 3 but recipe.epochs is 2"):
        RunSpec.from_dict({**record, "epochs": 3})
    with pytest.raises(ConfigError, match="recipe: unknown option"):
        RunSpec.from_dict({"recipe": {"optimiser": "adam"}})


def test_run_flags_yaml_and_the_shared_helper(tmp_path):
    p = argparse.ArgumentParser()
    add_recipe_args(p)
    assert recipe_args(p.parse_args([])) == {}
    given = recipe_args(p.parse_args(["--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--weight-decay", "5e-4",
                                      "--schedule", "step", "--step-size", "3", "--gamma", "0.5", "--epochs", "7"]))
    assert given == {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "schedule": "step",
                     "step_size": 3, "gamma": 0.5, "epochs": 7}
    assert recipe_args(p.parse_args(["--no-nesterov"])) == {"nesterov": False}
    with pytest.raises(SystemExit):
        p.parse_args(["--optimizer", "rmsprop"])

    from poisonlab.cli.main import build_parser

    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump({"optimizer": "adamw", "schedule": "cosine", "weight_decay": 0.1, "lr": 0.01}))
    cfg = config_from_args(build_parser(["run"]).parse_args(["run", "--config", str(yml), "--weight-decay", "0.2"]))
    assert (cfg.optimizer, cfg.schedule, cfg.weight_decay, cfg.lr) == ("adamw", "cosine", 0.2, 0.01)  # flags over YAML
    ev = build_parser(["evaluate"]).parse_args(["evaluate", "--dataset", "digits", "--out", "x", "--optimizer", "adam", "--lr", "1e-3"])
    assert recipe_args(ev) == {"optimizer": "adam", "lr": 1e-3}
    from poisonlab.cli.target_cmd import run_config

    for command in ("target", "threshold"):
        args = build_parser([command]).parse_args([command, "--optimizer", "sgd", "--momentum", "0.9", "--schedule", "cosine"])
        assert run_config(args).recipe(64, device="cpu") == TrainConfig(momentum=0.9, schedule="cosine", batch_size=64,
                                                                         device="cpu")
    tr = build_parser(["transfer"]).parse_args(["transfer", "--weight-decay", "0.1"])
    assert recipe_args(tr) == {"weight_decay": 0.1}


def test_sweep_sets_the_victims_optimizer_and_schedule(tmp_path, capsys):
    spec = {"name": "recipe", "base": {"dataset": "digits", "model": "lr", "epochs": 2, "device": "cpu",
                                       "fraction": 0.05},
            "cases": [{}, ADAMW]}
    grid_file = tmp_path / "recipe.yaml"
    grid_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    assert main(["sweep", str(grid_file), "--out", str(out), "--workers", "0", "--quiet", "--no-cache"]) == 0
    rows = {r["config"]["optimizer"]: r for r in ResultsLog(out / "results.jsonl").latest().values()}
    assert set(rows) == {None, "adamw"} and all(r["status"] == "ok" for r in rows.values())
    recipe = rows["adamw"]["result"]["config"]["recipe"]
    assert {k: v for k, v in recipe.items() if k != "device"} == {
        k: v for k, v in dataclasses.asdict(TrainConfig(**ADAMW, epochs=2, batch_size=DIGITS_BATCH)).items() if k != "device"}
    assert rows[None]["result"]["config"]["recipe"]["optimizer"] == "sgd"
    # the two recipes train different victims (the clean weights' fingerprints differ)
    assert rows["adamw"]["fingerprints"]["victim_clean"] != rows[None]["fingerprints"]["victim_clean"]
    assert rows["adamw"]["result"]["clean_accuracy"] != rows[None]["result"]["clean_accuracy"]


def test_sweep_recipe_flags_apply_to_every_run_and_clash_with_the_grid(tmp_path):
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump({"base": {"dataset": "digits", "epochs": 1}, "grid": {"seed": [0, 1]}}))
    grid = load_grid_on(str(grid_file), {"optimizer": "adam", "lr": 0.001, "device": "cpu"})
    assert [(r.config.optimizer, r.config.lr, r.config.device) for r in grid.runs] == [("adam", 0.001, "cpu")] * 2
    plain = load_grid_on(str(grid_file), {})
    assert {r.run_id for r in grid.runs}.isdisjoint(r.run_id for r in plain.runs)
    grid_file.write_text(yaml.safe_dump({"base": {"dataset": "digits"}, "cases": [{"schedule": "cosine"}]}))
    with pytest.raises(ConfigError, match=r"--schedule step: .* sets schedule in cases\[0\]"):
        load_grid_on(str(grid_file), {"schedule": "step"})


def test_a_saved_pl_run_is_defended_again_with_its_recipe(tmp_path):
    """The record pl.run writes (its config has recipe_description, and the recipe only under
    ``recipe``) is read back by RunSpec.from_dict: the saved run is defended with the victim's
    own recipe, as pl.defend on the same poisons defends it."""
    from poisonlab.defenses import build_defense
    from poisonlab.protocol.defend import defend_saved_run

    victim = pl.victim("lr", epochs=2, device="cpu", **ADAMW)
    pl.run("digits", victim, "label_flip", 0.05, out=tmp_path / "r", progress=False)
    stored = json.loads((tmp_path / "r" / "result.json").read_text())
    assert "recipe_description" in stored["config"]
    cfg = RunSpec.from_dict(stored["config"])
    assert load_dataset("digits").default_batch_size == DIGITS_BATCH
    assert cfg.recipe(DIGITS_BATCH) == TrainConfig(**ADAMW, epochs=2, batch_size=DIGITS_BATCH, device="cpu")
    defend_saved_run(tmp_path / "r", build_defense("sphere"), out=tmp_path / "r" / "sphere")
    saved = json.loads((tmp_path / "r" / "sphere" / "defense.json").read_text())
    direct = pl.defend("digits", load_poisons(tmp_path / "r" / "poisons.npz"), victim, "sphere")
    assert saved["defended_accuracy"] == direct.defended_accuracy
    # negative control: plain SGD (what a record read without its recipe gives) defends to another accuracy
    sgd = pl.defend("digits", load_poisons(tmp_path / "r" / "poisons.npz"), pl.victim("lr", epochs=2, device="cpu"), "sphere")
    assert sgd.defended_accuracy != direct.defended_accuracy
