"""``poisonlab target`` / ``poisonlab threshold`` with ``--target reachable`` (issue #16) and the
checks both commands make before any work, on digits LR."""

import json

import pytest
import torch
from safetensors import safe_open

from poisonlab.cli.main import main
from poisonlab.protocol import load_state
from poisonlab.training import VictimSpec

#: the default 100-epoch digits victim starts at τ_gauge ≈ 0.034 < limit·ε = 0.05, so the search has
#: room to lower D_v accuracy (tests/test_reachable_target.py's settings, fewer steps)
FRACTION, LIMIT, STEPS = 0.1, 0.5, 10
REACHABLE = ["--target", "reachable", "--fraction", str(FRACTION), "-T", f"steps={STEPS}", "-T", f"reachable.limit={LIMIT}"]
MISSING = ["--dataset", "/nonexistent/poisonlab-data.npz"]  # loading it fails: an earlier exit is the check's


@pytest.fixture
def count_training(monkeypatch):
    trained = []
    train = VictimSpec.train
    monkeypatch.setattr(VictimSpec, "train", lambda self, *a, **k: trained.append(1) or train(self, *a, **k))
    return trained


def test_threshold_and_target_with_the_reachable_target(tmp_path, capsys, count_training):
    """threshold: the target's τ_gauge, recomputed by the report's own LP, is ≤ limit·ε at ε = --fraction,
    and the maker's info (its τ_gauge, D_v accuracies, seconds, cache) comes with it; target: the same
    target (a cache hit, no training) saved with its stage and ε, loadable, and threshold on the file agrees."""
    cache = ["--cache-dir", str(tmp_path / "c"), "--quiet"]
    saved = tmp_path / "th.safetensors"
    assert main(["threshold", *REACHABLE, *cache, "--json", "--save-target", str(saved)]) == 0
    th = json.loads(capsys.readouterr().out)
    made = th["target_info"]
    assert th["target"] == "reachable" and th["fraction"] == FRACTION
    assert made["eps"] == FRACTION and made["limit"] == LIMIT and made["tau_gauge_bound"] == pytest.approx(LIMIT * FRACTION)
    assert th["tau_gauge"] <= LIMIT * FRACTION * (1 + 1e-6), th["tau_gauge"]
    assert th["tau_gauge"] == pytest.approx(made["tau_gauge"], rel=1e-4) and th["fraction_passes_gauge"] is True
    # the clean victim (step 0) is feasible here, and the maker keeps the feasible iterate of lowest D_v accuracy
    assert made["tau_gauge_clean"] <= made["tau_gauge_bound"]
    assert made["val_accuracy_target"] <= made["val_accuracy_clean"]
    assert 0 <= made["best_step"] <= STEPS and made["seconds"] > 0 and made["cache"] == "miss"
    assert len(count_training) == 1

    out = tmp_path / "t.safetensors"
    assert main(["target", *REACHABLE, *cache, "--out", str(out), "--json"]) == 0
    tg = json.loads(capsys.readouterr().out)
    assert tg["cache"] == "hit" and len(count_training) == 1  # victim and target both from the cache
    assert tg["target"] == "reachable" and tg["tau_gauge"] == pytest.approx(made["tau_gauge"])
    assert tg["val_accuracy_target"] == pytest.approx(made["val_accuracy_target"])
    assert tg["target_test_accuracy"] == pytest.approx(th["target_test_accuracy"])
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["stage"] == "target:reachable" and float(meta["eps"]) == FRACTION
    assert float(meta["tau_gauge"]) == pytest.approx(made["tau_gauge"])
    a, b = load_state(out), load_state(saved)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

    assert main(["threshold", "--target", str(out), "--fraction", str(FRACTION), "--quiet", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["tau_gauge"] == pytest.approx(th["tau_gauge"], rel=1e-6)
    assert again["target_info"] == {"source": str(out), "cache": None}


@pytest.mark.parametrize("command, argv, message", [
    ("threshold", ["--target", "nope"], "unknown --target 'nope'"),
    ("target", ["--target", "nope"], "unknown --target 'nope'"),
    ("threshold", ["--target", "missing.safetensors"], "no such file"),
    ("target", ["--target", "saved.safetensors"], "this command makes a target"),
    ("threshold", ["--fraction", "0"], "--fraction must be > 0"),
    ("target", ["--target", "reachable", "--fraction", "1.5"], "--fraction must be a number"),
    ("threshold", ["--target", "reachable", "-T", "nope=1"], "unknown option(s) ['nope']"),
    ("threshold", ["--target", "reachable", "-T", "limit=3"], "limit must be"),
    ("target", ["--target", "reachable", "--eps-w", "0.3"], "configure target 'gradpc' only"),
    ("threshold", ["--target", "reachable", "-T", "gradpc.eps_w=0.3"], "is for target 'gradpc'"),
    ("target", ["-T", "nope=1"], "target 'gradpc': unknown option(s) ['nope']"),
    ("threshold", ["-T", "steps"], "must look like KEY=VALUE"),
])
def test_bad_target_inputs_exit_2_before_loading_data(command, argv, message, capsys, tmp_path, count_training):
    """Each bad input exits 2 with its own one-line message, before the data (a missing file here) is read."""
    assert main([command, *MISSING, *argv, "--quiet", "--out" if command == "target" else "--json",
                 *([str(tmp_path / "t.safetensors")] if command == "target" else [])]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "does not exist" not in err and len(err.splitlines()) == 1, err
    assert not count_training and not (tmp_path / "t.safetensors").exists()


@pytest.mark.parametrize("command", ["threshold", "target"])
def test_reachable_on_a_network_is_unsupported_before_training(command, capsys, tmp_path, count_training):
    out = tmp_path / "t.safetensors"
    assert main([command, "--model", "nn", "--target", "reachable", "--quiet",
                 *(["--out", str(out)] if command == "target" else [])]) == 2
    err = capsys.readouterr().err
    assert "linear softmax victims only" in err and "MLP" in err
    assert not count_training and not out.exists()


def test_target_options_reach_gradpc_and_win_over_its_flags(tmp_path, capsys):
    """-T gives any GradPC option too; on the same option it wins over the GradPC flag."""
    out = tmp_path / "g.safetensors"
    assert main(["target", "--epochs", "3", "--eps-w", "0.5", "--pc-steps", "3", "-T", "eps_w=0.2", "-T", "gradpc.norm=linf",
                 "--out", str(out), "--quiet", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["target"], made["eps_w"], made["norm"]) == ("gradpc", 0.2, "linf")
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["stage"] == "target:gradpc" and float(f.metadata()["eps_w"]) == 0.2


def test_library_threshold_makes_the_reachable_target_like_the_cli(tmp_path, capsys, count_training):
    """``pl.threshold(..., "reachable", fraction=ε)`` goes through the same maker as the CLI: the same
    target (τ_gauge, D_v accuracy) for the same victim, ε and options; without ε, or on a victim the box
    gauge does not apply to, a clear error before any training."""
    import poisonlab as pl
    from poisonlab.errors import ConfigError, UnsupportedError

    assert main(["threshold", *REACHABLE, "--quiet", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    lib = pl.threshold("digits", pl.victim("lr"), "reachable", fraction=FRACTION, options={"steps": STEPS, "limit": LIMIT})
    assert lib.target_info["tau_gauge"] == pytest.approx(cli["target_info"]["tau_gauge"], rel=1e-6)
    assert lib.target_info["val_accuracy_target"] == pytest.approx(cli["target_info"]["val_accuracy_target"])
    assert lib.tau_gauge == pytest.approx(cli["tau_gauge"], rel=1e-6) and lib.fraction_passes_gauge is True
    assert len(count_training) == 2
    with pytest.raises(ConfigError, match="give fraction="):
        pl.threshold("digits", pl.victim("lr"), "reachable")
    with pytest.raises(UnsupportedError, match="linear softmax"):
        pl.threshold("digits", pl.victim("nn", epochs=1), "reachable", fraction=FRACTION)
    with pytest.raises(ConfigError, match="valid targets|unknown target"):
        pl.threshold("digits", pl.victim("lr"), "nope", fraction=FRACTION)
    assert len(count_training) == 2  # none of the refusals trained anything
