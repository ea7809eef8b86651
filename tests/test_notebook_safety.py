"""Notebook safety: library figures never touch pyplot's backend or the user's open figures;
poison grids for inputs of any shape; perturbation stats outside plotting; Registry replace."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from poisonlab.data.bounds import Bounds
from poisonlab.data.perturbation import perturbation_stats
from poisonlab.data.types import Dataset, PoisonSet
from poisonlab.registry import Registry
from poisonlab.reporting import plots
from poisonlab.reporting.grids import poison_grid

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture()
def user_session():
    """A 'notebook': a non-Agg backend that is available headless (pdf) and one open user figure."""
    before = plt.get_backend()
    plt.switch_backend("pdf")
    backend = plt.get_backend()
    fig = plt.figure()
    fig.gca().plot([0, 1], [1, 0])
    yield backend, fig.number
    plt.close(fig)
    plt.switch_backend(before)


def _assert_untouched(session):
    import matplotlib

    backend, num = session
    assert matplotlib.get_backend() == backend
    assert plt.fignum_exists(num)


def _png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _image_set(n_train=10, n_poison=5, shape=(1, 6, 6)):
    g = torch.Generator().manual_seed(0)
    train = Dataset(torch.rand(n_train, *shape, generator=g), torch.arange(n_train) % 2, 2, "img")
    src = torch.tensor([3, -1, 0, 7, 3][:n_poison])
    x = torch.rand(n_poison, *shape, generator=g)
    x[src >= 0] = (train.x[src[src >= 0]] + 0.05 * torch.randn(int((src >= 0).sum()), *shape, generator=g)).clamp(0, 1)
    return PoisonSet(x, torch.ones(n_poison, dtype=torch.int64), src), train


def _tabular_set(d=7):
    g = torch.Generator().manual_seed(1)
    lo, hi = torch.full((d,), -3.0), torch.full((d,), 3.0)
    lo[0] = -math.inf  # one unbounded feature
    train = Dataset(torch.randn(12, d, generator=g), torch.arange(12) % 3, 3, "tab", Bounds.of((lo, hi), (d,)))
    src = torch.tensor([2, 5, -1, 11])
    x = torch.randn(4, d, generator=g)
    x[src >= 0] = train.x[src[src >= 0]] + torch.tensor([0.5, -0.25, 0.0, 0.0, 0.0, 0.0, 0.0])
    return PoisonSet(x, torch.tensor([0, 1, 2, 0]), src), train


def _reference_stats(poisons, train):
    has = poisons.source_index >= 0
    diff = (poisons.x[has] - train.x[poisons.source_index[has]]).abs()
    return float(diff.max()), float(diff.mean())


# ---------------------------------------------------------------------------- perturbation stats
@pytest.mark.parametrize("make", [_image_set, _tabular_set])
def test_perturbation_stats_match_the_direct_computation(make):
    poisons, train = make()
    stats = perturbation_stats(poisons, train)
    assert set(stats) == {"max_perturbation", "mean_perturbation"}
    mx, mean = _reference_stats(poisons, train)
    assert stats["max_perturbation"] == mx and stats["mean_perturbation"] == mean


def test_perturbation_stats_nan_without_sources():
    _, train = _tabular_set()
    none = PoisonSet(torch.zeros(3, 7), torch.zeros(3, dtype=torch.int64), torch.full((3,), -1))
    empty_index = PoisonSet(torch.zeros(2, 7), torch.zeros(2, dtype=torch.int64))  # default: no source_index
    for ps in (none, empty_index):
        s = perturbation_stats(ps, train)
        assert math.isnan(s["max_perturbation"]) and math.isnan(s["mean_perturbation"])


def test_perturbation_stats_known_answer():
    train = Dataset(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), 2)
    ps = PoisonSet(torch.tensor([[0.5, -1.0], [9.0, 9.0]]), torch.zeros(2, dtype=torch.int64), torch.tensor([2, -1]))
    assert perturbation_stats(ps, train) == {"max_perturbation": 1.0, "mean_perturbation": 0.75}


# ---------------------------------------------------------------------------- figures leave pyplot alone
@pytest.mark.parametrize("make", [
    _image_set,
    lambda: _image_set(shape=(3, 5, 5)),
    lambda: _image_set(shape=(6, 6)),            # (N, H, W)
    lambda: _image_set(shape=(4, 3, 3)),         # many channels: feature plot
    lambda: _image_set(shape=(1, 1, 2)),         # toy points
    _tabular_set,
])
def test_poison_grid_any_shape_leaves_the_session_alone(user_session, tmp_path, make):
    poisons, train = make()
    stats = poison_grid(tmp_path / "sub" / "g.png", poisons, train, title="t")
    _png(tmp_path / "sub" / "g.png")
    assert stats == perturbation_stats(poisons, train)
    _assert_untouched(user_session)


def test_poison_grid_caption_uses_the_data_scale(user_session, tmp_path, monkeypatch):
    from poisonlab.reporting import grids

    captions = []
    real = grids.save_figure

    def spy(fig, path, dpi=120):
        captions.append(fig._suptitle.get_text())
        return real(fig, path, dpi)

    monkeypatch.setattr(grids, "save_figure", spy)
    poison_grid(tmp_path / "a.png", *_image_set())
    poison_grid(tmp_path / "b.png", *_tabular_set())
    assert "pixel scale 0-1" in captions[0]
    assert "pixel" not in captions[1] and "data scale" in captions[1] and "3" in captions[1]
    _assert_untouched(user_session)


def test_poison_grid_without_poisons_writes_nothing(tmp_path):
    _, train = _tabular_set()
    stats = poison_grid(tmp_path / "none.png", PoisonSet(torch.zeros(0, 7), torch.zeros(0, dtype=torch.int64)), train)
    assert math.isnan(stats["max_perturbation"]) and not (tmp_path / "none.png").exists()


def _row(i, attack, fraction, seed, drop, threshold=None):
    return {"run_id": f"id{i}", "run_dir": f"runs/id{i}", "dataset": "toy", "model": "lr", "attack": attack,
            "fraction": fraction, "seed": seed, "accuracy_drop": drop, "threshold": threshold}


@pytest.fixture()
def records():
    return [_row(i, a, f, s, 30 * f + s * 0.1 + (a == "b"), 0.05 if a == "b" else None)
            for i, (a, f, s) in enumerate((a, f, s) for a in ("a", "b") for f in (0.01, 0.03, 0.1) for s in range(2))]


def test_every_plot_leaves_the_session_alone(user_session, tmp_path, records):
    from poisonlab.protocol import save_poisons

    img, _ = _image_set()
    tab, _ = _tabular_set()
    for r in records:  # poisons of each run: attack "a" images, attack "b" tabular
        d = tmp_path / r["run_dir"]
        d.mkdir(parents=True)
        save_poisons(d / "poisons.npz", img if r["attack"] == "a" else tab)
    paths = [plots.plot_drop_vs_fraction(records, tmp_path / "o" / "drop.png"),
             plots.plot_transition(records, tmp_path / "o" / "transition.png")[0],
             plots.plot_poison_grids(records, tmp_path, tmp_path / "o" / "grids.png")]
    fig, ax = plots.new_figure(1, 2, figsize=(4, 2), sharey=True)
    ax[0].plot([1, 2, 3])
    paths.append(plots.save_figure(fig, tmp_path / "o" / "new.png"))
    for p in paths:
        _png(p)
    _assert_untouched(user_session)
    assert plt.get_fignums() == [user_session[1]]  # nothing of ours was registered with pyplot


def test_library_modules_never_select_a_backend():
    import inspect

    from poisonlab.reporting import grids

    for mod in (plots, grids):
        src = inspect.getsource(mod)
        assert "matplotlib.use(" not in src and "import matplotlib.pyplot" not in src
    assert not hasattr(plots, "pyplot")


# ---------------------------------------------------------------------------- registry
def test_registry_replace_semantics():
    r: Registry[int] = Registry("thing")
    r.add("a", 1)
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        r.add("a", 2)
    assert r.get("a") == 1
    r.add("a", 2, replace=True)
    assert r.get("a") == 2 and len(r) == 1
    r.add("new", 5, replace=True)  # replace=True on a free name simply adds
    assert r.names() == ["a", "new"]

    @r.register("b")
    def first():
        return 1

    with pytest.raises(ValueError, match="replace=True"):
        r.register("b")(lambda: 2)

    @r.register("b", replace=True)
    def second():
        return 2

    assert r.get("b") is second and r.names() == ["a", "b", "new"]
    with pytest.raises(ValueError, match="invalid"):
        r.add(" b", 3, replace=True)


def test_feature_grid_draws_many_features(user_session, tmp_path):
    g = torch.Generator().manual_seed(2)
    train = Dataset(torch.randn(5, 200, generator=g), torch.zeros(5, dtype=torch.int64), 2, bounds=Bounds.of((-np.inf, np.inf)))
    ps = PoisonSet(train.x[:3] + 0.1, torch.zeros(3, dtype=torch.int64), torch.tensor([0, 1, 2]))
    stats = poison_grid(tmp_path / "wide.png", ps, train)
    assert stats["max_perturbation"] == pytest.approx(0.1, abs=1e-6)
    _png(tmp_path / "wide.png")
    _assert_untouched(user_session)
