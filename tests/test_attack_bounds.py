"""Attacks on any nn.Module, any input shape, inside the data's bounds.

One contract table over EVERY registered attack on (a) a user's own module (in no registry) on
standardised tabular data (N, d) with per-feature bounds that are not [0, 1], and (b) the digits
images (N, 1, 8, 8) in [0, 1] with the registered ``lr`` victim: each attack returns poisons inside
the bounds, or raises UnsupportedError from ``check_supported`` before any work — the expected
table below says which, so a change is noticed. Plus the per-feature box theory against brute force,
the linear-softmax recogniser, gc's projection and τ_box, the generators and the follower note.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab.attacks import ATTACKS, build_attack
from poisonlab.data import poison_count
from poisonlab.data.arrays import data_from_arrays
from poisonlab.data.bounds import Bounds
from poisonlab.errors import UnsupportedError
from poisonlab.training import TrainConfig, Victim, VictimSpec

# tiny options per attack (every registered attack must have an entry: test_every_attack_is_in_the_table)
TINY: dict[str, dict] = {
    "label_flip": {},
    "tgda": {"epochs": 1, "n": 2, "pretrain.epochs": 1, "solver.iters": 3, "generator_options": {"hidden": [16, 8]}},
    "back_gradient": {"epochs": 1, "k": 2},
    "min_max": {"epochs": 1},
    "metapoison": {"outer_steps": 2, "ensemble": 2, "stagger_epochs": 1, "radius": 0.1},
    "gc": {"target_options": {"eps_w": 0.05, "steps": 1, "lr": 1.0}, "steps": 5, "lr": 0.05},
    "unlearnable": {"rounds": 1, "pgd_steps": 3},
    "feature_targeted": {"target_options.steps": 2, "gc_steps": 5, "invert_steps": 5},
    "i_min_max": {"steps": 3},
    "gradient_matching": {"steps": 5, "restarts": 1},
}
#: (attack, case) -> what the UnsupportedError must say; every other pair must run
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("feature_targeted", "tabular_mlp"): r"features \+ a linear head",
}
BILEVEL = ("back_gradient", "metapoison", "min_max", "tgda")
CASES = ("tabular_mlp", "digits_lr")


class TwoLayerMLP(nn.Module):
    """A user's own architecture: no registry knows it, no ``features`` / ``head`` split."""

    def __init__(self, d: int, c: int, h: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _tabular_arrays(widen: float = 0.1):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=300, n_features=10, n_informative=5, n_redundant=2, n_classes=3,
                               random_state=0)
    x = (x - x.mean(0)) / x.std(0)
    span = x.max(0) - x.min(0)
    return x.astype(np.float32), y, x.min(0) - widen * span, x.max(0) + widen * span


def _victim(spec: VictimSpec, data) -> Victim:
    model = spec.train(data.train, 0)
    return Victim(spec, 0, {k: v.detach().clone() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def tabular_mlp():
    x, y, lo, hi = _tabular_arrays()
    exp = data_from_arrays(x, y, bounds=(lo, hi), seed=0, name="tabular")
    data = exp.attack_data()
    # an Adam recipe: the bilevel followers approximate it (and say so)
    spec = VictimSpec(model="mlp", input_shape=(10,), num_classes=3,
                      recipe=TrainConfig(optimizer="adam", lr=0.01, epochs=5, batch_size=32, device="cpu"),
                      factory=lambda: TwoLayerMLP(10, 3))
    return data, _victim(spec, data)


@pytest.fixture(scope="module")
def digits_lr():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    data = data_from_arrays(x, d.target, bounds=(0.0, 1.0), seed=0, name="digits").attack_data()
    spec = VictimSpec("lr", (1, 8, 8), 10, TrainConfig(epochs=3, batch_size=64, device="cpu"))
    return data, _victim(spec, data)


def test_every_attack_is_in_the_table():
    assert sorted(TINY) == ATTACKS.names()
    assert {a for a, _ in UNSUPPORTED} <= set(TINY) and {c for _, c in UNSUPPORTED} <= set(CASES)


def _assert_inside(x: torch.Tensor, bounds: Bounds) -> None:
    lo, hi = bounds.expanded(x.shape[1:])
    assert torch.isfinite(x).all()
    assert bool((x >= lo).all() and (x <= hi).all()), f"outside the bounds by {bounds.violation(x)}"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_attack_runs_inside_the_bounds_or_is_unsupported_before_any_work(request, monkeypatch, name, case):
    data, victim = request.getfixturevalue(case)
    attack = build_attack(name, TINY[name])
    expected = UNSUPPORTED.get((name, case))
    if expected is not None:
        crafted, trained = [], []

        def no_craft(*a, **k):
            crafted.append(1)
            raise AssertionError("check_supported let an unsupported attack start its work")

        monkeypatch.setattr(type(attack), "_craft", no_craft)
        train = VictimSpec.train
        monkeypatch.setattr(VictimSpec, "train", lambda self, *a, **k: trained.append(1) or train(self, *a, **k))
        with pytest.raises(UnsupportedError, match=expected):
            attack.poison(data, victim, 0.05, generator=torch.Generator().manual_seed(0))
        assert crafted == [] and trained == []
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = attack.poison(data, victim, 0.05, generator=torch.Generator().manual_seed(0))
    n = poison_count(0.05, len(data.train))
    assert len(out) == n and out.x.shape == (n, *data.train.input_shape) and out.y.shape == (n,)
    _assert_inside(out.x, data.bounds)
    assert out.y.min() >= 0 and out.y.max() < data.num_classes
    if attack.clean_label:
        assert torch.equal(out.y, data.train.y[out.source_index])
    if name in BILEVEL:  # every bilevel follower takes the recipe's optimiser (Adam here): nothing approximated
        assert out.info["follower"].startswith(victim.spec.recipe.optimizer)
        assert "approximated" not in out.info["follower"]
        assert not any("approximated" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------- more unsupported cases
def test_more_unsupported_cases_are_refused_before_any_work(tabular_mlp, monkeypatch):
    data, victim = tabular_mlp
    x, y, lo, hi = _tabular_arrays()
    hi = hi.copy()
    hi[3] = np.inf
    unbounded = data_from_arrays(x, y, bounds=(lo, hi), seed=0).attack_data()
    cases = [
        ("tgda", {"generator": "conv_autoencoder"}, data, "needs image inputs"),
        ("tgda", {}, unbounded, "finite bounds"),
        ("gc", {"init": "plan"}, data, "linear softmax"),
    ]
    for name, opts, d, match in cases:
        attack = build_attack(name, {**TINY[name], **opts})
        monkeypatch.setattr(type(attack), "_craft", lambda *a, **k: pytest.fail("work started"))
        with pytest.raises(UnsupportedError, match=match):
            attack.poison(d, victim, 0.05, generator=torch.Generator().manual_seed(0))
        monkeypatch.undo()


def test_attacks_on_a_users_linear_softmax_module_with_per_feature_bounds():
    """nn.Sequential(Flatten, Linear) is a linear softmax model: gc reports τ_box / τ_gauge over the
    per-feature box (and follows its plan); feature_targeted splits it and inverts inside the box;
    gc's projection keeps large steps inside the per-feature bounds and reaches their faces."""
    from poisonlab.theory.box import linear_box_threshold

    x, y, lo, hi = _tabular_arrays()
    data = data_from_arrays(x, y, bounds=(lo, hi), seed=0).attack_data()
    spec = VictimSpec("linear", (10,), 3, TrainConfig(epochs=5, batch_size=32, device="cpu"),
                      factory=lambda: nn.Sequential(nn.Flatten(), nn.Linear(10, 3)))
    victim = _victim(spec, data)
    gc = build_attack("gc", {**TINY["gc"], "steps": 20, "lr": 2.0, "init": "plan"})
    out = gc.poison(data, victim, 0.2, generator=torch.Generator().manual_seed(0))
    _assert_inside(out.x, data.bounds)
    lo_t, hi_t = data.bounds.expanded((10,))
    at_face = (out.x == lo_t) | (out.x == hi_t)
    assert at_face.any(), "large steps should push some features onto the box's faces"
    info = out.info
    assert info["box_not_applicable"] is None and info["tau_box"] > 0
    assert info["tau_gauge"] >= info["tau_box"] - 1e-9 and len(info["gauge_label_mix"]) == 3
    # τ_box is the per-feature box's, not [0, 1]'s
    from poisonlab.attacks.gc import sum_gradient
    from poisonlab.theory.linear import linear_gradient_matrix as _linear_gradient_matrix
    from poisonlab.autodiff import named_params

    target = victim.clean_model()
    target.load_state_dict(out.states["target"])
    names, w = named_params(target)
    g = sum_gradient(target, names, w, data.train.x, data.train.y, 1.0 / len(data.train), 4096)
    G = _linear_gradient_matrix(target, names, g, (10,))
    per_feature = linear_box_threshold(G, data.bounds.lower.double(), data.bounds.upper.double())
    assert info["tau_box"] == pytest.approx(per_feature, rel=1e-12)
    assert info["tau_box"] != pytest.approx(linear_box_threshold(G), rel=1e-3)
    # feature_targeted: features = the flattened input, inversion inside the per-feature box
    ft = build_attack("feature_targeted", {**TINY["feature_targeted"], "invert_steps": 20, "invert_lr": 0.5})
    out = ft.poison(data, victim, 0.1, generator=torch.Generator().manual_seed(0))
    _assert_inside(out.x, data.bounds)


def test_a_non_linear_victim_reports_the_box_quantities_as_not_applicable(tabular_mlp):
    data, victim = tabular_mlp
    out = build_attack("gc", TINY["gc"]).poison(data, victim, 0.05, generator=torch.Generator().manual_seed(0))
    assert out.info["tau_box"] is None and out.info["tau_gauge"] is None
    assert "not a linear softmax model" in out.info["box_not_applicable"]


# ---------------------------------------------------------------------------- the linear-softmax recogniser
class _MyLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 12))
        self.b = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


def test_as_linear_softmax_recognises_linear_softmax_modules_only():
    from poisonlab.models import build_victim
    from poisonlab.theory import as_linear_softmax, linear_softmax_names

    torch.manual_seed(0)
    lr = build_victim("lr", (1, 3, 4), 3)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    lin = nn.Linear(12, 3)
    mine = _MyLinear()
    for model, shape in ((lr, (1, 3, 4)), (seq, (1, 3, 4)), (lin, (12,)), (mine, (1, 3, 4))):
        W, b = as_linear_softmax(model, shape)
        assert W.shape == (3, 12) and b.shape == (3,)
        assert any(W is p for p in model.parameters()) and any(b is p for p in model.parameters())
    assert linear_softmax_names(lr) == ("linear.weight", "linear.bias")
    assert linear_softmax_names(seq) == ("1.weight", "1.bias")
    assert as_linear_softmax(mine) is None  # without an input shape only known architectures qualify
    assert as_linear_softmax(lin, (1, 3, 4)) is None  # a bare Linear on (N, 1, 3, 4) is not W·flatten(x)
    not_linear = [nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.ReLU()), nn.Linear(12, 3, bias=False),
                  nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Linear(4, 3)), build_victim("nn", (12,), 3, hidden=[4]),
                  nn.Linear(12, 1)]
    for model in not_linear:
        assert as_linear_softmax(model, (12,)) is None and as_linear_softmax(model) is None
    state = {k: v.clone() for k, v in seq.state_dict().items()}
    rng = torch.get_rng_state()
    seq.train()
    as_linear_softmax(seq, (12,))
    assert seq.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[k], v) for k, v in seq.state_dict().items())


# ---------------------------------------------------------------------------- theory.box, per-feature
def _corners(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return torch.tensor(list(itertools.product(*zip(lo.tolist(), hi.tolist()))), dtype=torch.float64)


def test_box_support_bound_per_feature_equals_brute_force_over_the_corners():
    from poisonlab.theory.box import box_support_bound

    g = torch.Generator().manual_seed(0)
    C, d = 3, 3
    for _ in range(20):
        lo = torch.randn(d, generator=g, dtype=torch.float64)
        hi = lo + 2 * torch.rand(d, generator=g, dtype=torch.float64)
        V = torch.randn(C, d + 1, generator=g, dtype=torch.float64)
        X = torch.cat([_corners(lo, hi), torch.ones(2 ** d, 1, dtype=torch.float64)], 1)
        brute = max(float((X @ (V[k] - V[l])).max()) for k in range(C) for l in range(C))  # a linear sup is at a corner
        assert box_support_bound(V, lo, hi) == pytest.approx(brute, rel=1e-12, abs=1e-12)
        assert box_support_bound(V, lo.numpy(), hi.numpy()) == box_support_bound(V, lo, hi)
    # an unbounded feature the direction leans on: σ̄ = inf and τ_box = 0 (the box bounds nothing)
    V = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert box_support_bound(V, [0.0, 0.0, 0.0], [math.inf, 1.0, 1.0]) == math.inf
    # ... and a zero coefficient on an infinite side contributes nothing (not 0·inf)
    assert box_support_bound(V, [0.0, -math.inf, 0.0], [1.0, math.inf, 1.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        box_support_bound(V, [0.0, 1.0, 0.0], [1.0, 0.0, 1.0])
    with pytest.raises(ValueError):
        box_support_bound(V, [0.0, 0.0], [1.0, 1.0])


def _old_tau_box(G: torch.Tensor) -> float:
    """τ_box for pixels in [0, 1] as poisonlab computed it before per-feature bounds."""
    g = G.double() - G.double().mean(0, keepdim=True)
    sq = float((g * g).sum())
    D = (-g)[:, None, :] - (-g)[None, :, :]
    sigma = float((torch.maximum(D[..., :-1] * 0.0, D[..., :-1] * 1.0).sum(-1) + D[..., -1]).max())
    return sq / sigma


def test_tau_box_and_gauge_with_scalar_unit_bounds_equal_the_old_values():
    from poisonlab.theory.box import linear_box_gauge, linear_box_threshold

    G = torch.randn(4, 7, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    G -= G.mean(0)
    old = _old_tau_box(G)
    assert linear_box_threshold(G) == old and linear_box_threshold(G, 0.0, 1.0) == old
    assert linear_box_threshold(G, torch.zeros(6), torch.ones(6)) == old  # per-feature [0, 1] too
    a, b = linear_box_gauge(G), linear_box_gauge(G, np.zeros(6), np.ones(6))
    assert a.tau == b.tau and np.array_equal(a.plan, b.plan)


def test_box_gauge_per_feature_is_exact_on_a_single_poison_at_a_corner_and_certified():
    from poisonlab.theory.box import (
        box_support_bound,
        linear_box_gauge,
        linear_box_threshold,
    )

    lo = torch.tensor([-2.0, 0.5, -1.0, 3.0], dtype=torch.float64)
    hi = torch.tensor([-1.0, 2.0, 4.0, 3.5], dtype=torch.float64)
    x_star = torch.tensor([-1.0, 0.5, 4.0, 3.5], dtype=torch.float64)  # a corner of the box
    G = torch.zeros(3, 5, dtype=torch.float64)
    G[0, :4], G[0, 4] = -x_star, -1.0
    G[2, :4], G[2, 4] = x_star, 1.0
    gauge = linear_box_gauge(0.07 * G, lo, hi)
    assert gauge.tau == pytest.approx(0.07, rel=1e-6)
    assert gauge.plan[0, 2] == pytest.approx(0.07, rel=1e-6)
    assert gauge.tau >= linear_box_threshold(0.07 * G, lo, hi) - 1e-12
    R = torch.randn(4, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    R -= R.mean(0)
    ga = linear_box_gauge(R, lo, hi)
    V = torch.from_numpy(ga.direction)
    assert box_support_bound(V, lo, hi) <= 1 + 1e-7 and float((-R * V).sum()) == pytest.approx(ga.tau, rel=1e-6)
    assert ga.tau >= linear_box_threshold(R, lo, hi) - 1e-9
    # a wider box makes cancelling easier; an unbounded side drops its constraint
    assert linear_box_gauge(R, lo - 1, hi + 1).tau <= ga.tau + 1e-9
    inf_hi = hi.clone()
    inf_hi[1] = math.inf
    assert linear_box_gauge(R, lo, inf_hi).tau <= ga.tau + 1e-9


def test_gc_box_threshold_with_unit_bounds_equals_the_old_value(digits_lr):
    from poisonlab.attacks.gc import sum_gradient
    from poisonlab.theory.linear import box_gauge, box_threshold, linear_gradient_matrix as _linear_gradient_matrix
    from poisonlab.autodiff import named_params

    data, victim = digits_lr
    model = victim.clean_model()
    names, w = named_params(model)
    tr = data.train
    g = sum_gradient(model, names, w, tr.x, tr.y, 1.0 / len(tr), 4096)
    old = _old_tau_box(_linear_gradient_matrix(model, names, g))
    assert box_threshold(model, names, g) == old
    assert box_threshold(model, names, g, Bounds.unit(), (1, 8, 8)) == old
    per_pixel = Bounds.of((np.zeros((1, 8, 8)), np.ones((1, 8, 8))), (1, 8, 8))
    assert box_threshold(model, names, g, per_pixel, (1, 8, 8)) == old
    assert box_gauge(model, names, g).tau == box_gauge(model, names, g, per_pixel, (1, 8, 8)).tau


# ---------------------------------------------------------------------------- generators and projections
def test_generators_land_in_the_bounds_and_default_to_fc_for_non_images():
    from poisonlab.models.generators import build_generator, default_generator_name

    assert default_generator_name((10,)) == "fc_autoencoder"
    assert default_generator_name((3,)) == "fc_autoencoder"  # a 3-feature table is not a colour image
    assert default_generator_name((1, 8, 8)) == "fc_autoencoder"
    assert default_generator_name((3, 8, 8)) == "conv_autoencoder"
    x, y, lo, hi = _tabular_arrays()
    box = Bounds.of((lo, hi), (10,))
    torch.manual_seed(0)
    gen = build_generator("fc_autoencoder", (10,), 3, bounds=box, hidden=(8, 4))
    with torch.no_grad():
        for p in gen.parameters():
            p.mul_(50.0)  # saturate the sigmoid: outputs on the box's faces
        out = gen(torch.from_numpy(x[:50]), torch.from_numpy(y[:50]))
    assert out.shape == (50, 10)
    assert box.violation(out) < 1e-5 and box.violation(box.clamp(out)) == 0.0
    assert float(out.min()) < 0.0 or float(out.max()) > 1.0  # not the unit box
    torch.manual_seed(1)
    a = build_generator("fc_autoencoder", (1, 4, 4), 2, hidden=(8, 4))
    torch.manual_seed(1)
    b = build_generator("fc_autoencoder", (1, 4, 4), 2, bounds=Bounds.unit(), hidden=(8, 4))
    xi, yi = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 0, 1, 1])
    assert torch.equal(a(xi, yi), b(xi, yi))


def test_the_linf_projection_is_one_function_with_the_datas_bounds():
    from poisonlab.attacks._radius import clamp_box, project
    from poisonlab.validation import check_radius
    from poisonlab.errors import ConfigError
    from poisonlab.pretrain.invert import invert_features

    box = Bounds.of(([-1.0, 0.0, 2.0], [1.0, 5.0, 3.0]), (3,))
    src = torch.tensor([[0.0, 4.9, 2.5]])
    x = torch.tensor([[3.0, 9.0, 0.0]])
    assert project(x, src, 0.5, box).tolist() == [[0.5, 5.0, 2.0]]
    assert torch.equal(project(x, src, None, box), box.clamp(x))
    # clamp_box: the same values as Bounds.clamp, with clamp's gradient on the faces
    z = torch.tensor([[-1.0, 0.0, 3.0]], requires_grad=True)
    clamp_box(z, box).sum().backward()
    assert torch.equal(clamp_box(z, box), box.clamp(z)) and z.grad.tolist() == [[1.0, 1.0, 1.0]]
    check_radius(2.5, "x")  # radii are in the data's units: more than 1 is fine for standardised data
    for bad in (0.0, -1.0, math.inf, True):
        with pytest.raises(ConfigError):
            check_radius(bad, "x")
    # the inversion stays in a per-feature box
    A = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    out, _ = invert_features(lambda v: v @ A.T, torch.full((2, 4), 50.0), torch.zeros(2, 3) + 0.5 * (box.lower + box.upper),
                             steps=30, lr=0.5, bounds=box)
    assert box.contains(out)
