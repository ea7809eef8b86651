"""A record says what produced it: commit, torch threads, device and its name, determinism switches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

import poisonlab as pl
from poisonlab import provenance


def test_run_records_its_environment(tmp_path):
    before = torch.are_deterministic_algorithms_enabled()
    r = pl.run("digits", pl.victim("lr", epochs=1), "label_flip", 0.03, progress=False, out=tmp_path / "run")
    env = r.environment
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["device"] == "cpu" and env["device_name"]
    assert env["poisonlab_version"] == pl.__version__ and env["torch_version"] == torch.__version__
    assert env["determinism"]["deterministic_algorithms"] is True  # the run's switches ...
    assert torch.are_deterministic_algorithms_enabled() == before  # ... and the caller's back afterwards
    import json

    assert json.loads((tmp_path / "run" / "result.json").read_text())["environment"] == env


def test_commit_is_the_checkout_head():
    src = Path(provenance.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    got = provenance.source_commit()
    if head.returncode != 0:  # an installed copy outside a checkout
        assert got is None
    else:
        assert got is not None and got["commit"] == head.stdout.strip() and isinstance(got["dirty"], bool)


def test_no_git_means_no_commit(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.source_commit() is None
    assert provenance.run_environment("cpu")["git_commit"] is None
