"""pl.evaluate on the Ray backend gives, cell by cell, the numbers of the in-process local backend.

Skipped when Ray is not installed (``pip install "poisonlab[ray]"``); starting Ray is slow, hence ``slow``.
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason='the Ray backend needs Ray: pip install "poisonlab[ray]"')

import poisonlab as pl  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.needs_extra("ray")]

ATTACKS = {"label_flip": {}, "min_max": {"epochs": 2}}


def _numbers(ev):
    return ([(a.name, a.seeds, a.clean_accuracy, a.poisoned_accuracy) for a in ev.attacks],
            [(x.defense, x.attack, x.defended_accuracy, x.roc_auc) for x in ev.defenses],
            ev.worst_case.per_seed, {s: t.get("tau") for s, t in ev.theory.items()})


def test_ray_matches_local(tmp_path):
    victim = pl.victim("lr", epochs=3, device="cpu")
    kw = {"attacks": ATTACKS, "defenses": ["loss"], "seeds": (0, 1), "progress": False}
    local = pl.evaluate("digits", victim, 0.05, out=tmp_path / "local", **kw)
    remote = pl.evaluate("digits", victim, 0.05, out=tmp_path / "ray", backend="ray", workers=2, **kw)
    assert _numbers(remote) == _numbers(local)
    assert not ray.is_initialized()  # the backend shut down the instance it started


def test_ray_takes_in_memory_data_through_a_file(tmp_path):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    data = pl.data_from_arrays(x / 16.0, y)
    victim = pl.victim("lr", epochs=2, device="cpu")
    kw = {"attacks": ["label_flip"], "defenses": None, "progress": False}
    local = pl.evaluate(data, victim, 0.05, out=tmp_path / "local", **kw)
    remote = pl.evaluate(data, victim, 0.05, out=tmp_path / "ray", backend="ray", workers=1, **kw)
    assert (tmp_path / "ray" / "data.npz").is_file()
    assert _numbers(remote) == _numbers(local)
