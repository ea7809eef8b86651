"""The three-stage protocol and the CLI, end to end on the embedded digits set."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from poisonlab.cli.main import main
from poisonlab.protocol import RunSpec, load_poisons, load_state, run_protocol

TINY = dict(epochs=3, batch_size=128)


def test_protocol_result_and_artifacts(tmp_path):
    cfg = RunSpec(out=str(tmp_path / "r"), fraction=0.05, **TINY)
    res = run_protocol(cfg, progress=False, log=lambda m: None)
    assert res.n_poison == round(0.05 * res.n_train)
    assert res.accuracy_drop == pytest.approx(res.clean_accuracy - res.poisoned_accuracy)
    on_disk = json.loads((tmp_path / "r" / "result.json").read_text())
    assert on_disk["clean_accuracy"] == res.clean_accuracy and on_disk["config"]["recipe"]["epochs"] == 3
    p = load_poisons(tmp_path / "r" / "poisons.npz")
    assert len(p) == res.n_poison and (p.source_index >= 0).all()
    assert (tmp_path / "r" / "poisons.png").stat().st_size > 1000
    assert "linear.weight" in load_state(tmp_path / "r" / "victim_clean.safetensors")


def test_same_seed_same_numbers_and_identical_poisons(tmp_path):
    r = [run_protocol(RunSpec(out=str(tmp_path / f"r{i}"), seed=s, fraction=0.1, attack_options={"mode": "random"}, **TINY),
                      progress=False, log=lambda m: None) for i, s in enumerate((4, 4, 5))]
    assert r[0].clean_accuracy == r[1].clean_accuracy and r[0].poisoned_accuracy == r[1].poisoned_accuracy
    b0, b1, b2 = ((tmp_path / f"r{i}" / "poisons.npz").read_bytes() for i in range(3))
    assert b0 == b1 and b0 != b2
    a, b = np.load(tmp_path / "r0" / "poisons.npz"), np.load(tmp_path / "r1" / "poisons.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_poison_reuse_reproduces_poisoned_accuracy(tmp_path):
    first = run_protocol(RunSpec(out=str(tmp_path / "a"), fraction=0.2, **TINY), progress=False, log=lambda m: None)
    again = run_protocol(RunSpec(out=str(tmp_path / "b"), fraction=0.2, poisons=str(tmp_path / "a"), **TINY),
                         progress=False, log=lambda m: None)
    assert again.poisoned_accuracy == first.poisoned_accuracy


def test_label_flip_at_full_budget_hurts(tmp_path):
    """Behaviour, not just 'it ran': flipping as many points as D_tr has must lower accuracy."""
    res = run_protocol(RunSpec(out=str(tmp_path / "r"), fraction=1.0, epochs=20, batch_size=64),
                       progress=False, log=lambda m: None)
    assert res.accuracy_drop > 20.0


def test_cli_run_with_yaml_config_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "digits", "model": "lr", "fraction": 0.05, "epochs": 2, "seed": 1,
                                   "attack_options": {"mode": "random"}}))
    rc = main(["run", "--config", str(cfg), "--epochs", "3", "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "clean accuracy" in out and "accuracy drop" in out
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["config"]["epochs"] == 3 and res["seed"] == 1 and res["config"]["attack_options"] == {"mode": "random"}


def test_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "label_flip" in out and "digits" in out and "resnet18" in out


@pytest.mark.parametrize(
    "argv,match",
    [
        (["run", "--dataset", "imagenet"], "registered dataset"),
        (["run", "--model", "svm"], "valid models"),
        (["run", "--attack", "nope"], "valid attacks"),
        (["run", "--fraction", "1.5"], "fraction"),
        (["run", "--fraction", "-0.1"], "fraction"),
        (["run", "-A", "mode=sideways"], "mode"),
        (["run", "-A", "colour=red"], "unknown option"),
        (["run", "-M", "depth=3"], "no option"),
        (["run", "--dataset", "/nonexistent/file.npz"], "does not exist"),
        (["run", "--poisons", "/nonexistent/poisons.npz", "--epochs", "1"], "does not exist"),
    ],
)
def test_cli_bad_input_is_a_clear_error(argv, match, capsys, tmp_path):
    rc = main(argv + ["--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err and match in err


def test_cli_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: digits\nepochz: 3\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert "epochz" in capsys.readouterr().err


def test_cli_missing_data_file_names_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POISONLAB_OFFLINE", "1")
    assert main(["run", "--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mnist.npz" in err and "train-images-idx3-ubyte" in err


def test_console_script_end_to_end(tmp_path):
    """The installed entry point, as a user runs it (subprocess, real exit code)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "poisonlab", "run", "--epochs", "2", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "poisoned accuracy" in proc.stdout and (tmp_path / "o" / "result.json").exists()
    bad = subprocess.run([sys.executable, "-m", "poisonlab", "run", "--attack", "nope"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


@pytest.mark.realdata
def test_mnist_lr_label_flip_through_data_dir(data_dir, tmp_path):
    rc = main(["run", "--dataset", "mnist", "--model", "lr", "--attack", "label_flip", "--data-dir", data_dir,
               "--epochs", "1", "--out", str(tmp_path / "m"), "--quiet"])
    assert rc == 0
    res = json.loads((tmp_path / "m" / "result.json").read_text())
    assert res["n_train"] == 42000 and res["n_poison"] == 1260 and res["clean_accuracy"] > 80.0


def test_datasets_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("POISONLAB_OFFLINE", "1")
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "embedded" in out and "missing" in out


def test_injection_is_validated_and_named_in_the_output_dir():
    with pytest.raises(Exception, match="injection"):
        RunSpec(injection="swap")
    assert RunSpec(injection="replace", fraction=1.0).default_out().endswith("-f1-replace-s0")


def test_replace_injection_makes_unlearnable_examples_bite(tmp_path):
    """Huang et al.'s threat model: error-minimising noise on *every* training image (in place of the
    originals) must hurt an end-to-end CNN clearly more than the same noise added beside the originals."""
    drops = {}
    for inj in ("add", "replace"):
        cfg = RunSpec(out=str(tmp_path / inj), model="cnn", attack="unlearnable", fraction=1.0, injection=inj,
                        attack_options={"radius": 0.1, "rounds": 10, "pgd_steps": 20},
                        epochs=20, batch_size=64)
        res = run_protocol(cfg, progress=False, log=lambda m: None)
        assert res.injection == inj and res.n_poison == res.n_train
        drops[inj] = res.accuracy_drop
    assert drops["replace"] > drops["add"] + 4.0, drops
