"""The public API (poisonlab.data_from_arrays / victim / poison / run / defend / threshold): a user's
own module on a user's own arrays, bad input caught before any work, the CLI giving the same
results as the library, and no global state touched (notebook safety)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from extras import param
from torch import nn

import poisonlab as pl
from poisonlab.cli.main import main
from poisonlab.data import load_dataset
from poisonlab.errors import ConfigError, ContractError, DataError, UnknownNameError


class TinyMLP(nn.Module):
    """A user's architecture that no registry knows."""

    def __init__(self, d: int = 6, c: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 16), nn.Tanh())
        self.out = nn.Linear(16, c)

    def forward(self, x):
        return self.out(self.body(x))


def _tabular(n=240, d=6, c=3, seed=0):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=d, n_informative=4, n_redundant=0, n_classes=c, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    span = x.max(0) - x.min(0)
    return x.astype(np.float32), y.astype(np.int32), (x.min(0) - 0.1 * span, x.max(0) + 0.1 * span)


def test_import_is_fast_and_sets_nothing():
    code = ("import os, sys; before = dict(os.environ); import poisonlab; "
            "assert dict(os.environ) == before, 'environment changed'; "
            "assert 'torch' not in sys.modules, 'torch imported eagerly'; print(poisonlab.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert callable(pl.run) and callable(pl.data_from_arrays)
    with pytest.raises(AttributeError):
        pl.no_such_name  # noqa: B018


def test_data_from_arrays_shapes_dtypes_split_and_holdout():
    x, y, bounds = _tabular()
    d = pl.data_from_arrays(x, y.astype(np.uint8), bounds=bounds, seed=3)
    n_test = round(0.2 * len(x))
    assert len(d.test) == n_test and len(d.train) + len(d.val) == len(x) - n_test
    assert len(d.train) == round(0.7 * (len(x) - n_test))
    assert d.input_shape == (6,) and d.num_classes == 3 and d.train.y.dtype == torch.int64
    assert tuple(d.bounds.lower.shape) == (6,) and not d.bounds.is_unit
    again = pl.data_from_arrays(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), bounds=bounds, seed=3)
    assert torch.equal(again.train.x, d.train.x) and torch.equal(again.val.y, d.val.y)  # numpy == torch, same seed
    other = pl.data_from_arrays(x, y, bounds=bounds, seed=4)
    assert not torch.equal(other.train.x, d.train.x)
    imgs = pl.data_from_arrays(np.random.default_rng(0).random((50, 8, 8)), np.arange(50) % 2, seed=0)
    assert imgs.input_shape == (8, 8) and imgs.bounds.is_unit  # (N, H, W) kept as given; [0, 1] default
    explicit = pl.data_from_arrays(x[:200], y[:200], x[200:], y[200:], bounds=bounds, val_fraction=0.5, num_classes=4)
    assert len(explicit.test) == 40 and len(explicit.train) == len(explicit.val) == 100 and explicit.num_classes == 4


@pytest.mark.parametrize("case, match", [
    ("nan", "NaN or inf"),
    ("outside", "outside the bounds"),
    ("labels_range", "labels must be in 0..2"),
    ("lengths", "labels for"),
    ("float_labels", "integers"),
    ("bounds_shape", "does not broadcast"),
    ("bounds_order", "lower must be <= upper"),
    ("test_only_x", "both x_test and y_test"),
    ("one_d", "must be \\(N, \\*input_shape\\)"),
    ("test_shape", "shapes differ"),
])
def test_data_from_arrays_rejects_bad_input_with_a_clear_message(case, match):
    x, y, (lo, hi) = _tabular()
    kwargs = {"bounds": (lo, hi)}
    if case == "nan":
        x = x.copy()
        x[3, 2] = np.nan
    elif case == "outside":
        kwargs["bounds"] = (0.0, 1.0)
    elif case == "labels_range":
        kwargs["num_classes"] = 3
        y = y.copy()
        y[0] = 5
    elif case == "lengths":
        y = y[:-1]
    elif case == "float_labels":
        y = y + 0.5
    elif case == "bounds_shape":
        kwargs["bounds"] = (lo[:3], hi[:3])
    elif case == "bounds_order":
        kwargs["bounds"] = (hi, lo)
    elif case == "test_only_x":
        kwargs["x_test"] = x[:10]
    elif case == "one_d":
        x = x[:, 0]
    elif case == "test_shape":
        kwargs.update(x_test=x[:10, :5], y_test=y[:10])
    with pytest.raises(DataError, match=match):
        pl.data_from_arrays(x, y, **kwargs)


def test_victim_validates_before_any_work():
    with pytest.raises(UnknownNameError, match="valid models"):
        pl.victim("nope")
    with pytest.raises(ConfigError, match="not a module instance"):
        pl.victim(TinyMLP())
    with pytest.raises(ConfigError, match="optimizer"):
        pl.victim(TinyMLP, optimizer="rmsprop")
    with pytest.raises(ConfigError, match="must return a torch.nn.Module"):
        x, y, b = _tabular()
        pl.run(pl.data_from_arrays(x, y, bounds=b), pl.victim(lambda: 42), "label_flip", 0.05, progress=False)
    v = pl.victim(TinyMLP, optimizer="adam", lr=1e-2, epochs=3, schedule="cosine")
    assert v.model == "TinyMLP" and v.is_custom and v.recipe.optimizer == "adam"


def test_user_module_on_tabular_data_run_poison_defend_threshold(tmp_path):
    x, y, bounds = _tabular()
    data = pl.data_from_arrays(x, y, bounds=bounds)
    v = pl.victim(TinyMLP, optimizer="adam", lr=1e-2, epochs=20)
    res = pl.run(data, v, "label_flip", 0.1, progress=False)
    assert isinstance(res, pl.RunResult) and res.defended is None
    assert res.model == "TinyMLP" and res.n_poison == round(0.1 * len(data.train))
    assert res.clean_accuracy > 60.0  # it learned something (3 classes, chance 33 %)
    assert res.accuracy_drop == pytest.approx(res.clean_accuracy - res.poisoned_accuracy)
    assert res.artifacts == {} and not list(tmp_path.iterdir())  # out=None writes nothing
    again = pl.run(data, v, "label_flip", 0.1, progress=False)
    assert again.poisoned_accuracy == res.poisoned_accuracy  # same seed, same numbers

    p = pl.poison(data, v, "label_flip", 0.1, options={"mode": "random"}, progress=False)
    xs, ys, src = p.numpy()
    assert xs.shape == (res.n_poison, 6) and isinstance(xs, np.ndarray) and (src >= 0).all()
    assert np.array_equal(xs, data.train.x.numpy()[src])  # label flip keeps the inputs
    pl.validate(p, data)

    rep = pl.defend(data, p, v, "loss", options={"fraction": 0.1})
    assert isinstance(rep, pl.DefenseResult) and rep.defended_drop is None  # pl.defend trains no clean victim
    assert rep.scores.shape == (len(data.train) + len(p),) and rep.keep.dtype == torch.bool
    assert rep.n_removed == round(0.1 * len(rep.scores)) and 0.0 <= rep.roc_auc <= 1.0
    json.dumps(rep.to_dict())

    t = pl.threshold(data, v, "gradpc", fraction=0.03, options={"eps_w": 0.3, "steps": 3})
    assert isinstance(t, pl.ThresholdResult)
    assert t.tau >= 0 and t.tau_box is None and "linear softmax" in t.box_not_applicable
    assert isinstance(t.fraction_passes, bool)


def test_validate_rejects_poisons_outside_the_data_bounds():
    x, y, bounds = _tabular()
    data = pl.data_from_arrays(x, y, bounds=bounds)
    p = pl.poison(data, pl.victim(TinyMLP, epochs=1), "label_flip", 0.05, progress=False)
    bad = pl.PoisonSet(p.x + 100.0, p.y, p.source_index)
    with pytest.raises(ContractError, match="outside the data's bounds"):
        pl.validate(bad, data)


def test_linear_softmax_threshold_on_images_matches_the_cli(tmp_path, capsys):
    rc = main(["threshold", "--dataset", "digits", "--model", "lr", "--epochs", "3", "--eps-w", "0.3",
               "--pc-steps", "3", "--fraction", "0.03", "--json", "--quiet"])
    assert rc == 0
    cli = json.loads(capsys.readouterr().out)
    lib = pl.threshold("digits", pl.victim("lr", epochs=3), "gradpc", fraction=0.03,
                       options={"eps_w": 0.3, "steps": 3})
    for key in ("tau", "tau_box", "tau_gauge", "min_poisons", "fraction_passes", "fraction_passes_gauge"):
        assert getattr(lib, key) == cli[key], key
    assert lib.tau_box is not None and lib.tau_gauge is not None and lib.tau_box <= lib.tau_gauge + 1e-9


def test_cli_and_library_give_identical_poisons_and_accuracies(tmp_path, capsys):
    rc = main(["run", "--epochs", "3", "--fraction", "0.05", "-A", "mode=random", "--out", str(tmp_path / "cli"),
               "--quiet", "--json"])
    assert rc == 0
    cli = json.loads(capsys.readouterr().out)
    bundle = load_dataset("digits")
    data = pl.data_from_arrays(bundle.train.x.numpy(), bundle.train.y.numpy(), bundle.test.x.numpy(),
                               bundle.test.y.numpy(), seed=0, name="digits")
    lib = pl.run(data, pl.victim("lr", epochs=3, batch_size=64), "label_flip", 0.05, options={"mode": "random"},
                 out=tmp_path / "lib", progress=False)
    by_name = pl.run("digits", pl.victim("lr", epochs=3), "label_flip", 0.05, options={"mode": "random"},
                     out=tmp_path / "name", progress=False)
    for r in (lib, by_name):
        assert (r.clean_accuracy, r.poisoned_accuracy) == (cli["clean_accuracy"], cli["poisoned_accuracy"])
    cli_bytes = (tmp_path / "cli" / "poisons.npz").read_bytes()
    assert (tmp_path / "lib" / "poisons.npz").read_bytes() == cli_bytes
    assert (tmp_path / "name" / "poisons.npz").read_bytes() == cli_bytes


def test_run_twice_in_a_notebook_leaves_figures_and_backend_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    fig = plt.figure()
    try:
        for i in range(2):
            pl.run("digits", pl.victim("lr", epochs=1), "label_flip", 0.03, out=tmp_path / f"r{i}", progress=False)
            assert (tmp_path / f"r{i}" / "poisons.png").stat().st_size > 1000
        assert matplotlib.get_backend() == backend
        assert plt.fignum_exists(fig.number) and plt.get_fignums() == [fig.number]
    finally:
        plt.close(fig)


def test_re_registering_with_replace_works_like_a_re_run_cell():
    from poisonlab.attacks import ATTACKS, register_attack
    from poisonlab.attacks.label_flip import LabelFlip
    from poisonlab.models.victims import VICTIMS

    try:
        for _ in range(2):  # the same cell twice
            @register_attack("my_flip", replace=True)
            class MyFlip(LabelFlip):
                pass

            VICTIMS.add("my_mlp", lambda input_shape, num_classes: TinyMLP(int(np.prod(input_shape)), num_classes),
                        replace=True)
        with pytest.raises(ValueError, match="replace=True"):
            VICTIMS.add("my_mlp", lambda input_shape, num_classes: TinyMLP())
        x, y, bounds = _tabular()
        res = pl.run(pl.data_from_arrays(x, y, bounds=bounds), pl.victim("my_mlp", epochs=2), "my_flip", 0.05,
                     progress=False)
        assert res.attack == "my_flip" and res.model == "my_mlp"
    finally:
        ATTACKS._items.pop("my_flip", None)
        VICTIMS._items.pop("my_mlp", None)


def test_cache_is_an_explicit_argument(tmp_path):
    from poisonlab.cache import ArtifactCache

    x, y, bounds = _tabular()
    data = pl.data_from_arrays(x, y, bounds=bounds)
    v = pl.victim(TinyMLP, epochs=3)
    first = pl.run(data, v, "label_flip", 0.05, cache=tmp_path / "c", progress=False)
    second = pl.run(data, v, "label_flip", 0.05, cache=ArtifactCache(tmp_path / "c"), progress=False)
    plain = pl.run(data, v, "label_flip", 0.05, progress=False)
    assert (first.cache["victim_clean"], second.cache["victim_clean"], plain.cache["victim_clean"]) == ("miss", "hit", None)
    assert first.clean_accuracy == second.clean_accuracy == plain.clean_accuracy
    # another architecture is another entry
    pl.run(data, pl.victim(lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), epochs=3), "label_flip",
           0.05, cache=tmp_path / "c", progress=False)
    assert len(ArtifactCache(tmp_path / "c").entries("victim_clean")) == 2


def test_defend_reuses_the_poisoned_victim_that_run_trained(tmp_path, monkeypatch):
    """With the run's cache, pl.defend loads the victim pl.run retrained on D_tr ∪ poisons instead of
    training it again, and judges exactly as it does without a cache."""
    from poisonlab.cache import ArtifactCache
    from poisonlab.training import VictimSpec

    x, y, bounds = _tabular()
    data = pl.data_from_arrays(x, y, bounds=bounds)
    v = pl.victim(TinyMLP, epochs=3)
    first = pl.run(data, v, "label_flip", 0.05, cache=tmp_path / "c", progress=False)
    assert first.cache == {"victim_clean": "miss", "victim_poisoned": "miss"}
    poisons = pl.poison(data, v, "label_flip", 0.05, progress=False)
    trainings = []
    real_train = VictimSpec.train
    monkeypatch.setattr(VictimSpec, "train", lambda self, *a, **k: trainings.append(1) or real_train(self, *a, **k))
    plain = pl.defend(data, poisons, v, "loss")
    n_plain = len(trainings)
    cached = pl.defend(data, poisons, v, "loss", cache=tmp_path / "c")
    assert n_plain - (len(trainings) - n_plain) == 1  # one training fewer: the poisoned victim came from the cache
    assert len(ArtifactCache(tmp_path / "c").entries("victim_poisoned")) == 1
    assert cached.poisoned_accuracy == plain.poisoned_accuracy == first.poisoned_accuracy
    assert cached.defended_accuracy == plain.defended_accuracy
    assert torch.equal(cached.scores, plain.scores) and torch.equal(cached.keep, plain.keep)


def test_the_own_model_tutorial_runs_end_to_end():
    """examples/own_model.py — the tutorial the README points to — runs through the public API and
    prints its table (about 20 s on 2 cores)."""
    import os
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "own_model.py"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    for name in ("label_flip", "gc", "tgda"):
        row = next(line for line in lines if line.startswith(name + " "))
        assert len(row.split()) == 6 and float(row.split()[2]) > 50.0  # acc1 of a trained victim
    assert any("ROC-AUC" in line for line in lines) and any("tau =" in line for line in lines)


# ---------------------------------------------------------------------------- the contract table, public API
def _api_table_data():
    x, y, bounds = _tabular(n=200)
    return pl.data_from_arrays(x, y, bounds=bounds)


@pytest.fixture(scope="module")
def api_table():
    data = _api_table_data()
    victim = pl.victim(TinyMLP, epochs=5, batch_size=64)
    flips = pl.poison(data, victim, "label_flip", 0.1, progress=False)
    return data, victim, flips


@pytest.mark.parametrize("name", sorted(__import__("poisonlab.attacks", fromlist=["ATTACKS"]).ATTACKS.names()))
def test_every_attack_through_pl_poison_on_a_user_module_with_non_unit_bounds(api_table, name):
    """Every registered attack, called as a user calls it (pl.poison), on a module no registry knows
    over (N, d) features whose per-feature bounds are not [0, 1]: poisons inside the bounds, or an
    UnsupportedError before any training."""
    from test_attack_bounds import TINY, UNSUPPORTED

    from poisonlab.errors import UnsupportedError

    data, victim, _ = api_table
    if (name, "tabular_mlp") in UNSUPPORTED:
        with pytest.raises(UnsupportedError, match=UNSUPPORTED[(name, "tabular_mlp")]):
            pl.poison(data, victim, name, 0.05, options=TINY[name], progress=False)
        return
    p = pl.poison(data, victim, name, 0.05, options=TINY[name], progress=False)
    assert len(p) == round(0.05 * len(data.train)) and p.x.shape[1:] == (6,)
    assert data.bounds.contains(p.x) and not (data.bounds.lower == 0).all()
    pl.validate(p, data)


@pytest.mark.parametrize("name", [param(n) for n in sorted(__import__("poisonlab.defenses", fromlist=["DEFENSES"]).DEFENSES.names())])
def test_every_defense_through_pl_defend_on_a_user_module_with_non_unit_bounds(api_table, name):
    """Every registered defense through pl.defend on the same user module and data: one finite score
    per point and detection metrics (the ART detectors with the art extra)."""
    from test_defense_bounds import OPTIONS
    data, victim, flips = api_table
    rep = pl.defend(data, flips, victim, name, options=OPTIONS.get(name))
    n = len(data.train) + len(flips)
    assert rep.scores.shape == (n,) and torch.isfinite(rep.scores).all() and rep.keep.shape == (n,)
    assert rep.roc_auc is None or 0.0 <= rep.roc_auc <= 1.0
