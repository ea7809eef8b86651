"""The Table 2.2 baselines ``i_min_max`` (Koh et al. 2022) and ``gradient_matching`` (Witches' brew /
Fowl et al. 2021, indiscriminate): the attack contract on sklearn digits (N, 1, 8, 8) with the
``lr`` victim and on standardised tabular (N, 10) features with per-feature bounds (one feature
unbounded) and a user-defined MLP; feasibility (bounds, L∞ ball, sphere/slab set); determinism;
option validation; and what each attack is for — measured first over 10 seeds, asserted only where
it held in all of them (numbers beside each assertion).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.attacks import ATTACKS, build_attack
from poisonlab.attacks.i_min_max import SphereSlab
from poisonlab.data import PoisonedDataset, data_from_arrays, poison_count
from poisonlab.errors import ConfigError, UnsupportedError
from poisonlab.training import TrainConfig, Victim, VictimSpec, accuracy

NAMES = ("i_min_max", "gradient_matching")
#: small-but-real options: each call takes well under a second on the cases below
FAST = {"i_min_max": {"steps": 5}, "gradient_matching": {"steps": 20, "restarts": 2}}


class TabularMLP(nn.Module):
    """A user's own model, in no registry."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 16), nn.Tanh())
        self.out = nn.Linear(16, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class Detached(nn.Module):
    """A model whose output carries no gradient back to its inputs."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.detach().flatten(1))


def _digits(seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return data_from_arrays(x, d.target, name="digits", seed=seed)


def _tabular():
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=400, n_features=10, n_informative=6, n_redundant=2, n_classes=3,
                               n_clusters_per_class=1, class_sep=1.5, random_state=0)
    x = (x - x.mean(0)) / x.std(0)
    lo, hi = x.min(0) - 0.5, x.max(0) + 0.5  # per-feature bounds, not [0, 1]
    lo[3], hi[3] = -np.inf, np.inf  # one unbounded feature
    return data_from_arrays(x.astype(np.float32), y, bounds=(lo, hi), name="tabular")


def _trained(spec: VictimSpec, exp, seed: int = 0) -> Victim:
    spec = spec.for_data(exp.input_shape, exp.num_classes)
    model = spec.train(exp.train, seed)
    return Victim(spec, seed, {k: v.detach().clone() for k, v in model.state_dict().items()})


DIGITS_RECIPE = TrainConfig(lr=0.5, epochs=15, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def cases():
    dig, tab = _digits(), _tabular()
    d = tab.input_shape[0]
    return {
        "digits": (dig, _trained(VictimSpec("lr", recipe=DIGITS_RECIPE), dig)),
        "tabular": (tab, _trained(VictimSpec("tabular_mlp", recipe=TrainConfig(lr=0.2, epochs=20, batch_size=32,
                                                                                  device="cpu"),
                                             factory=lambda: TabularMLP(d, 3)), tab)),
    }


def _poison(name, exp, victim, fraction=0.05, seed=1, **opts):
    attack = build_attack(name, {**FAST[name], **opts})
    return attack, attack.poison(exp.attack_data(), victim, fraction, generator=torch.Generator().manual_seed(seed))


def test_registered():
    assert set(NAMES) <= set(ATTACKS.names())
    assert ATTACKS.get("gradient_matching").clean_label and not ATTACKS.get("i_min_max").clean_label


@pytest.mark.parametrize("case", ["digits", "tabular"])
@pytest.mark.parametrize("name", NAMES)
def test_contract_on_images_and_tabular_data(cases, name, case):
    exp, victim = cases[case]
    before = (exp.train.x.clone(), exp.train.y.clone(), exp.val.x.clone())
    attack, out = _poison(name, exp, victim)
    n = poison_count(0.05, len(exp.train))
    assert len(out) == n and out.x.shape == (n, *exp.input_shape) and out.source_index.shape == (n,)
    assert torch.isfinite(out.x).all() and exp.bounds.contains(out.x)
    assert out.y.dtype == torch.int64 and out.y.min() >= 0 and out.y.max() < exp.num_classes
    assert (out.source_index >= 0).all() and len(torch.unique(out.source_index)) == n  # distinct sources
    if attack.clean_label:
        assert torch.equal(out.y, exp.train.y[out.source_index])
    assert torch.equal(before[0], exp.train.x) and torch.equal(before[1], exp.train.y) and torch.equal(before[2], exp.val.x)
    PoisonedDataset.mix(exp.train, out, "replace")  # every poison names a distinct source
    import json

    json.dumps(out.info)  # diagnostics are JSON-serialisable


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_poisons(cases, name):
    exp, victim = cases["tabular"]
    _, a = _poison(name, exp, victim, seed=3)
    _, b = _poison(name, exp, victim, seed=3)
    _, c = _poison(name, exp, victim, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.source_index, b.source_index)
    assert not torch.equal(a.source_index, c.source_index)


@pytest.mark.parametrize("name,bad", [
    ("i_min_max", {"group_size": 0}), ("i_min_max", {"steps": -1}), ("i_min_max", {"step_size": 0}),
    ("i_min_max", {"restarts": 0}), ("i_min_max", {"labels": "random"}), ("i_min_max", {"weighting": "all"}),
    ("i_min_max", {"feasible": "sphere"}), ("i_min_max", {"sphere_quantile": 0.0}), ("i_min_max", {"slab_quantile": 1.5}),
    ("i_min_max", {"follower_lr": -0.1}), ("i_min_max", {"follower_steps": 1.5}), ("i_min_max", {"batch_size": 0}),
    ("i_min_max", {"dtype": "float16"}), ("i_min_max", {"no_such_option": 1}),
    ("gradient_matching", {"target": "nope"}), ("gradient_matching", {"target": ""}),
    ("gradient_matching", {"reverse_loss": "mse"}), ("gradient_matching", {"steps": -1}),
    ("gradient_matching", {"lr": 0}), ("gradient_matching", {"schedule": "cosine"}),
    ("gradient_matching", {"restarts": 0}), ("gradient_matching", {"radius": 0}),
    ("gradient_matching", {"radius": float("inf")}), ("gradient_matching", {"init_scale": -1.0}),
    ("gradient_matching", {"chunk_size": 0}), ("gradient_matching", {"no_such_option": 1}),
])
def test_bad_options_are_config_errors(name, bad):
    with pytest.raises(ConfigError):
        build_attack(name, bad)


def test_gradient_matching_unknown_parameter_is_a_config_error(cases):
    exp, victim = cases["digits"]
    with pytest.raises(ConfigError, match="no parameter"):
        _poison("gradient_matching", exp, victim, params=("no.such.weight",))


@pytest.mark.parametrize("name", NAMES)
def test_victim_without_input_gradient_is_unsupported_before_any_work(cases, name):
    exp, _ = cases["tabular"]
    spec = VictimSpec("detached", recipe=TrainConfig(epochs=1, device="cpu"), factory=lambda: Detached(10, 3))
    victim = Victim(spec.for_data(exp.input_shape, 3), 0)  # never trained: the check needs no weights
    with pytest.raises(UnsupportedError, match="gradient with respect to its inputs"):
        build_attack(name, FAST[name]).poison(exp.attack_data(), victim, 0.05, generator=torch.Generator())


# ---------------------------------------------------------------------------- gradient matching
@pytest.mark.parametrize("case", ["digits", "tabular"])
def test_gradient_matching_stays_in_the_linf_ball(cases, case):
    exp, victim = cases[case]
    _, out = _poison("gradient_matching", exp, victim, radius=0.05)
    x0 = exp.train.x[out.source_index]
    assert float((out.x - x0).abs().max()) <= 0.05 + 1e-6 and exp.bounds.contains(out.x)
    assert out.info["max_perturbation"] > 0.04  # it used the ball


@pytest.mark.parametrize("target", ["reverse", "gradpc"])
def test_gradient_matching_raises_the_cosine(cases, target):
    exp, victim = cases["digits"]
    _, out = _poison("gradient_matching", exp, victim, fraction=0.1, target=target, target_options={"steps": 3})
    trace = [c for _, c in out.info["cosine_trace"]]
    assert len(trace) >= 3 and trace[-1] > trace[0] + 0.2  # digits LR: ≈ −0.4 → 0.7 in 20 steps
    assert out.info["final_cosine"] > out.info["initial_cosine"] + 0.2
    assert ("target" in out.states) == (target == "gradpc")


def test_gradient_matching_damages_digits_lr():
    """Measured over 10 seeds (ε = 0.2, 240 steps, 2 restarts): the test CE rose in every seed
    (+0.041 … +0.080), the accuracy drop was 0.00 … 3.06 (mean 1.84; label flip: −0.56 … 3.62, mean
    0.53) — so only the CE rise per seed and a positive mean drop are asserted (seeds 0–2: 2.51, 0.00,
    0.84), not "more than label flip"."""
    drops, rises = [], []
    for seed in range(3):
        exp = _digits(seed)
        victim = _trained(VictimSpec("lr", recipe=DIGITS_RECIPE), exp, seed)
        out = build_attack("gradient_matching", {"restarts": 2}).poison(
            exp.attack_data(), victim, 0.2, generator=torch.Generator().manual_seed(seed))
        clean, poisoned = victim.clean_model(), victim.retrain(PoisonedDataset.combine(exp.train, out).dataset)
        with torch.no_grad():
            rises.append(float(F.cross_entropy(poisoned(exp.test.x), exp.test.y) - F.cross_entropy(clean(exp.test.x), exp.test.y)))
        drops.append(accuracy(clean, exp.test) - accuracy(poisoned, exp.test))
    assert min(rises) > 0.01, rises
    assert sum(drops) / len(drops) > 0.25, drops


# ---------------------------------------------------------------------------- i-min-max
def test_i_min_max_picks_high_loss_points(cases):
    exp, victim = cases["digits"]
    _, out = _poison("i_min_max", exp, victim, fraction=0.1)
    clean = victim.clean_model()
    rand = torch.randperm(len(exp.train), generator=torch.Generator().manual_seed(0))[: len(out)]
    with torch.no_grad():
        poison_loss = float(F.cross_entropy(clean(out.x), out.y))
        clean_loss = float(F.cross_entropy(clean(exp.train.x[rand]), exp.train.y[rand]))
    assert poison_loss > 10 * clean_loss and poison_loss > 1.0  # digits LR: ≈ 8 vs ≈ 0.1
    assert out.info["chosen_loss_mean"] > 1.0 and len(out.info["label_counts"]) == 10


@pytest.mark.parametrize("case", ["digits", "tabular"])
def test_i_min_max_sphere_slab_points_are_feasible(cases, case):
    exp, victim = cases[case]
    _, out = _poison("i_min_max", exp, victim, feasible="sphere_slab", sphere_quantile=0.9, slab_quantile=0.9)
    feas = SphereSlab.fit(exp.train, 0.9, 0.9)
    assert exp.bounds.contains(out.x)
    assert feas.violation(out.x, out.y) <= 1e-4 * float(feas.radius.max())
    assert out.info["sphere_slab_violation"] <= 1e-4 * float(feas.radius.max())
    # the box alone lets the points go much farther from their class centroids
    _, free = _poison("i_min_max", exp, victim)
    assert feas.violation(free.x, free.y) > 0.1


@pytest.mark.parametrize("labels", ["keep", "flip"])
def test_i_min_max_label_rules(cases, labels):
    exp, victim = cases["tabular"]
    _, out = _poison("i_min_max", exp, victim, labels=labels, group_size=4, restarts=2)
    y0 = exp.train.y[out.source_index]
    assert torch.equal(out.y, y0 if labels == "keep" else (exp.num_classes - 1) - y0)


def test_i_min_max_damages_digits_lr_more_than_random_label_flip(cases):
    """Measured over 10 seeds (ε = 0.1): i_min_max dropped the accuracy by 5.57 … 8.36 points,
    label flip with random labels by −0.28 … 1.95."""
    exp, victim = cases["digits"]
    drops = {}
    for name, opts in (("i_min_max", {}), ("label_flip", {"mode": "random"})):
        out = build_attack(name, opts).poison(exp.attack_data(), victim, 0.1, generator=torch.Generator().manual_seed(0))
        drops[name] = accuracy(victim.clean_model(), exp.test) - accuracy(
            victim.retrain(PoisonedDataset.combine(exp.train, out).dataset), exp.test)
    assert drops["i_min_max"] > 3.0 and drops["i_min_max"] > drops["label_flip"] + 2.0, drops
