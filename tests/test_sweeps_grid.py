"""Grid specs: expansion, validation before anything runs, stable run ids."""

from __future__ import annotations

import pytest

from poisonlab.errors import ConfigError
from poisonlab.protocol import RunSpec
from poisonlab.sweeps import expand, load_grid, run_id

BASE = {"dataset": "digits", "model": "lr", "epochs": 2, "device": "cpu"}


def test_expansion_order_and_merge():
    g = expand({
        "name": "t", "base": {**BASE, "attack_options": {"mode": "rule"}},
        "cases": [{}, {"attack_options.mode": "random", "model": "nn", "model_options.hidden": [4]}],
        "grid": {"fraction": [0.1, 0.2], "seed": [0, 1, 2]},
    })
    assert len(g.runs) == 2 * 2 * 3
    got = [(r.config.attack_options["mode"], r.config.model, r.config.fraction, r.config.seed) for r in g.runs]
    assert got[:4] == [("rule", "lr", 0.1, 0), ("rule", "lr", 0.1, 1), ("rule", "lr", 0.1, 2), ("rule", "lr", 0.2, 0)]
    assert got[6] == ("random", "nn", 0.1, 0)
    assert g.runs[6].config.model_options == {"hidden": [4]}
    assert len({r.run_id for r in g.runs}) == 12


def test_run_id_is_stable_and_ignores_paths():
    a = RunSpec(**BASE, fraction=0.1, attack_options={"mode": "rule"})
    b = RunSpec(**BASE, fraction=0.1, attack_options={"mode": "rule"}, out="/x", cache_dir="/y", data_dir="/z")
    assert run_id(a) == run_id(b) == run_id(a.to_dict())
    assert run_id(a) != run_id(RunSpec(**BASE, fraction=0.1, attack_options={"mode": "random"}))
    assert run_id(a) != run_id(RunSpec(**BASE, fraction=0.1, seed=1))
    assert len(run_id(a)) == 16 and int(run_id(a), 16) >= 0
    # pinned: the id this config had before any RunSpec key was added (a new key must keep it)
    assert run_id(a) == "852f17fe40ab8912"
    # a key added later (injection) does not change the id of runs at its default...
    older = {k: v for k, v in a.to_dict().items() if k != "injection"}
    assert run_id(older) == run_id(a)
    # ...and does when set
    assert run_id(RunSpec(**{**a.to_dict(), "injection": "replace"})) != run_id(a)


@pytest.mark.parametrize("spec, needle", [
    ({"base": BASE, "grid": {"fractoin": [0.1]}}, "unknown key 'fractoin'"),
    ({"base": BASE, "gird": {"fraction": [0.1]}}, "unknown top-level key"),
    ({"base": BASE, "grid": {"fraction": [0.1, 2.0]}}, "fraction must be a number in [0, 1]"),
    ({"base": BASE, "grid": {"fraction": 0.1}}, "must be a non-empty list"),
    ({"base": BASE, "grid": {"seed": [-1]}}, "seed must be"),
    ({"base": {**BASE, "attack_options.mode": "sideways"}}, "mode must be one of ['rule', 'random'], got 'sideways'"),
    ({"base": {**BASE, "attack_options.strength": 3}}, "unknown option(s) ['strength']"),
    ({"base": {**BASE, "attack": "nope"}}, "unknown attack 'nope'"),
    ({"base": {**BASE, "model": "nope"}}, "unknown model 'nope'"),
    ({"base": {**BASE, "model_options.width": 3}}, "has no option(s) ['width']"),
    ({"base": {**BASE, "dataset": "nope"}}, "unknown dataset 'nope'"),
    ({"base": {**BASE, "lr.x": 1}}, "only allowed inside attack_options"),
    ({"base": BASE, "grid": {"seed": [0, 0]}}, "identical to run 0"),
    ({"base": BASE, "resources": {"cpus": 0}}, "resources.cpus"),
    ({"base": BASE, "resources": {"gpu": 1}}, "unknown option(s) ['gpu']"),
])
def test_bad_specs_raise_before_running(spec, needle):
    with pytest.raises(ConfigError) as err:
        expand(spec, "g.yaml")
    assert needle in str(err.value)


def test_load_grid_from_yaml(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("base: {dataset: digits, model: lr, epochs: 2}\ngrid:\n  fraction: [0.1, 0.2]\nresources: {cpus: 2}\n")
    g = load_grid(p)
    assert g.name == "g" and len(g.runs) == 2 and g.resources.cpus == 2
    p.write_text("base: [1, 2]\n")
    with pytest.raises(ConfigError):
        load_grid(p)


def test_examples_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "examples"
    g = load_grid(root / "digits_label_flip.yaml")
    assert len(g.runs) >= 12


@pytest.mark.realdata
def test_mnist_examples_validate():
    import os
    from pathlib import Path

    if not (Path(os.environ.get("POISONLAB_DATA", "/nonexistent")) / "mnist.npz").is_file():
        pytest.skip("needs mnist.npz in $POISONLAB_DATA")
    root = Path(__file__).resolve().parents[1] / "examples"
    sizes = {p.name: len(load_grid(p).runs) for p in sorted(root.glob("mnist_*.yaml"))}
    assert sizes == {"mnist_figure_2_4.yaml": 90, "mnist_lr_quick.yaml": 12, "mnist_table_2_2.yaml": 9}
