"""Defenses: one contract table over every registered defense, and known answers
(influence = closed form for ridge / least squares, Sever = explicit SVD, sphere / slab / kNN /
spectral = brute force, MaxUp with σ = 0 = plain training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from poisonlab.autodiff import CGOptions, named_params
from poisonlab.data import Dataset, PoisonedDataset, poison_count
from poisonlab.data.bounds import Bounds
from poisonlab.defenses import DEFENSES, Defense, DefenseConfig, build_defense, filter_scores
from poisonlab.defenses._grads import head_features, per_sample_grads, per_sample_loss_fn
from poisonlab.defenses.influence import influence_on_reference
from poisonlab.defenses.maxup import worst_case_loss
from poisonlab.defenses.sever import round_sizes, sever_scores
from poisonlab.defenses.slab import slab_scores
from poisonlab.defenses.spectral import spectral_scores
from poisonlab.defenses.sphere import class_centroids
from poisonlab.errors import ConfigError, ContractError, UnsupportedError
from poisonlab.seeding import torch_generator
from poisonlab.training import TrainConfig, Victim, VictimSpec

N_CLASS, PER_CLASS, N_OUT = 3, 60, 6


def _planted() -> tuple[PoisonedDataset, Dataset, torch.Tensor]:
    """Three tight clusters in [0,1]^6 (shape (N,1,2,3)) + N_OUT gross outliers: points of the
    class-0 cluster labelled 2. Returns (D with mask, a clean reference set, outlier indices)."""
    g = torch.Generator().manual_seed(1)
    means = torch.tensor([[0.2] * 6, [0.8] * 6, [0.2, 0.8] * 3])

    def cluster(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(N_CLASS).repeat_interleave(n)
        x = (means[y] + 0.04 * torch.randn(len(y), 6, generator=g)).clamp(0, 1)
        return x.view(-1, 1, 2, 3), y

    x, y = cluster(PER_CLASS)
    xo = (means[0] + 0.04 * torch.randn(N_OUT, 6, generator=g)).clamp(0, 1).view(-1, 1, 2, 3)
    clean = Dataset(x, y, N_CLASS, "planted")
    xr, yr = cluster(20)
    from poisonlab.data import PoisonSet

    mixed = PoisonedDataset.combine(clean, PoisonSet(xo, torch.full((N_OUT,), 2, dtype=torch.int64)))
    return mixed, Dataset(xr, yr, N_CLASS, "reference"), torch.arange(len(x), len(x) + N_OUT)


def _victim(model: str = "lr", **options) -> Victim:
    recipe = TrainConfig(lr=0.5, epochs=40, batch_size=32, device="cpu")
    return Victim(VictimSpec(model, (1, 2, 3), N_CLASS, recipe, options), seed=0)


# small, fast settings per defense; every registered defense must appear here (the ART-based
# ``art_*`` defenses have their own tests; every defense, ART's included, is also in test_defense_bounds.py)
TABLE = {
    "loss": {},
    "influence": {"cg_tol": 1e-8},
    "sever": {"rounds": 2},
    "maxup": {"m": 3, "sigma": 0.05},
    "sphere": {},
    "slab": {},
    "knn": {"k": 5},
    "spectral": {},
}


def test_every_registered_defense_is_in_the_table():
    assert sorted(TABLE) == [n for n in DEFENSES.names() if not n.startswith("art")]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_contract(name):
    mixed, ref, outliers = _planted()
    victim = _victim()
    n = len(mixed)
    frac = N_OUT / n  # poison_count(frac, n) == N_OUT
    assert poison_count(frac, n) == N_OUT
    d = build_defense(name, {**TABLE[name], "fraction": frac})
    x_before, y_before = mixed.dataset.x.clone(), mixed.dataset.y.clone()
    scored = d.score(mixed, victim, generator=torch_generator(3, "defense"), reference=ref)
    s1 = scored.scores
    s2 = d.score(mixed, victim, generator=torch_generator(3, "defense"), reference=ref).scores
    # one finite float64 score per point, deterministic under the seed, input untouched
    assert s1.shape == (n,) and s1.dtype == torch.float64 and torch.isfinite(s1).all()
    assert torch.equal(s1, s2)
    assert torch.equal(mixed.dataset.x, x_before) and torch.equal(mixed.dataset.y, y_before)
    # planted gross outliers are ranked first
    top = torch.sort(s1, descending=True, stable=True).indices[:N_OUT]
    assert set(top.tolist()) == set(outliers.tolist()), f"{name} ranked {sorted(top.tolist())}"
    # exactly the requested number removed (none for a training-time defense)
    for f in (0.0, 0.05, 0.25):
        keep = build_defense(name, {**TABLE[name], "fraction": f}).keep_mask(s1)
        expected = poison_count(f, n) if d.removes else 0
        assert int((~keep).sum()) == expected
    out = d.defend(mixed, victim, scored, generator=torch_generator(3, "defense"))
    assert out.n_removed == (N_OUT if d.removes else 0)
    assert torch.equal(out.scores, s1)
    if d.removes:
        assert set((~out.keep).nonzero().squeeze(1).tolist()) == set(outliers.tolist())
    assert isinstance(out.model, nn.Module)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_bad_options_raise(name):
    with pytest.raises(ConfigError):
        build_defense(name, {"no_such_option": 1})
    with pytest.raises(ConfigError):
        build_defense(name, {"fraction": 1.5})


def test_influence_needs_reference():
    mixed, _, _ = _planted()
    with pytest.raises(ConfigError):
        build_defense("influence").score(mixed, _victim(), generator=torch_generator(0, "d"))


class _Broken(Defense[DefenseConfig]):
    name = "broken"

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def _score(self, data, victim, *, generator, model, reference, progress):
        if self.mode == "nan":
            return torch.full((len(data),), float("nan"))
        if self.mode == "short":
            return torch.zeros(len(data) - 1)
        data.x.mul_(0.5)  # mutates
        return torch.zeros(len(data))


@pytest.mark.parametrize("mode", ["nan", "short", "mutate"])
def test_contract_violations_raise(mode):
    mixed, _, _ = _planted()
    with pytest.raises(ContractError):
        _Broken(mode).score(mixed, _victim(), generator=torch_generator(0, "d"))


class _Picky(Defense[DefenseConfig]):
    """Unsupported on every victim but ``lr``; returns its diagnostics with the scores."""

    name = "picky"
    calls = 0

    def check_supported(self, data, victim):
        if victim.spec.model != "lr":
            raise UnsupportedError(f"picky: only lr, got {victim.spec.model!r}")

    def _score(self, data, victim, *, generator, model, reference, progress):
        type(self).calls += 1
        return torch.arange(len(data), dtype=torch.float64), {"n": len(data)}


def test_check_supported_runs_before_any_work_and_info_comes_with_the_outcome():
    mixed, _, _ = _planted()
    nn_victim = _victim("nn", hidden=[4])
    with pytest.raises(UnsupportedError):
        _Picky().score(mixed, nn_victim, generator=torch_generator(0, "d"))
    assert _Picky.calls == 0
    d = _Picky(fraction=0.05)
    scored = d.score(mixed, _victim(), generator=torch_generator(0, "d"))
    assert scored.info == {"n": len(mixed)} and not hasattr(d, "info")  # diagnostics travel with the result only
    with pytest.raises(UnsupportedError):  # defend checks the victim it retrains too
        d.defend(mixed, nn_victim, scored, generator=torch_generator(0, "d"))
    out = d.defend(mixed, _victim(), scored, generator=torch_generator(0, "d"))
    assert out.info == {"n": len(mixed)}
    assert torch.equal(out.scores, torch.arange(len(mixed), dtype=torch.float64)) and out.n_removed == poison_count(0.05, len(mixed))
    # scores of other data are refused before the retrain; defend takes the score() result only
    with pytest.raises(ConfigError, match="score\\(\\) the same data"):
        d.defend(mixed.dataset.subset(torch.arange(10)), _victim(), scored, generator=torch_generator(0, "d"))
    with pytest.raises(TypeError, match="DefenseScores"):
        d.defend(mixed, _victim(), scored.scores, generator=torch_generator(0, "d"))
    # built-in defenses return their diagnostics too
    sever = build_defense("sever", {"rounds": 2})
    g = torch_generator(0, "d")
    out = sever.defend(mixed, _victim(), sever.score(mixed, _victim(), generator=g), generator=g)
    assert out.info["rounds"] == 2 and len(out.info["removed_per_round"]) == 2


def test_register_defense_replace(monkeypatch):
    from poisonlab.defenses import register_defense

    monkeypatch.setattr(DEFENSES, "_items", dict(DEFENSES._items))  # registrations vanish after the test
    monkeypatch.setattr(_Picky, "name", _Picky.name)
    monkeypatch.setattr(_Broken, "name", _Broken.name)
    register_defense("picky_test")(_Picky)
    with pytest.raises(ValueError):
        register_defense("picky_test")(_Broken)
    assert DEFENSES.get("picky_test") is _Picky and _Picky.name == "picky_test" and _Broken.name == "broken"
    register_defense("picky_test", replace=True)(_Broken)
    assert DEFENSES.get("picky_test") is _Broken and _Broken.name == "picky_test"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.floats(0.0, 1.0))
def test_filter_removes_exact_count_of_highest(values, fraction):
    scores = torch.tensor(values, dtype=torch.float64)
    keep = filter_scores(scores, fraction)
    k = poison_count(fraction, len(scores))
    assert int((~keep).sum()) == k
    if 0 < k < len(scores):
        assert scores[~keep].min() >= scores[keep].max()
        # ties broken by index: among equal scores the earlier point goes first
        border = scores[~keep].min()
        tied = (scores == border).nonzero().squeeze(1)
        removed_tied = tied[~keep[tied]]
        assert removed_tied.tolist() == tied[: len(removed_tied)].tolist()


# ----------------------------------------------------------------- influence: closed forms
@pytest.fixture
def ridge():
    g = torch.Generator().manual_seed(0)
    n, m, d = 30, 15, 4
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    xr = torch.randn(m, d, generator=g, dtype=torch.float64)
    yr = xr @ torch.randn(d, generator=g, dtype=torch.float64)
    return x, y, xr, yr


def _sq_loss(params, x, y):
    (w,) = params
    return 0.5 * (x @ w - y) ** 2


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_influence_matches_ridge_closed_form(ridge, lam):
    x, y, xr, yr = ridge
    n, d = x.shape
    h = x.T @ x / n + lam * torch.eye(d, dtype=torch.float64)
    w = torch.linalg.solve(h, x.T @ y / n)  # argmin mean ½(xᵀw − y)² + (λ/2)‖w‖²
    g_i = (x @ w - y).unsqueeze(1) * x  # (n, d) per-sample gradients
    g_ref = xr.T @ (xr @ w - yr) / len(xr)
    expected = -(g_i @ torch.linalg.solve(h, g_ref))
    got, solve = influence_on_reference(_sq_loss, (w,), x, y, xr, yr,
                                        solver=CGOptions(damping=lam, tol=1e-13, max_iter=50), chunk_size=7)
    assert solve.cg.converged
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_influence_is_the_derivative_of_the_reweighted_optimum(ridge):
    """I_up,loss(z_i) = d/dε L_ref(ŵ_ε) with ŵ_ε = argmin (1/n)Σℓ + εℓ(z_i) + (λ/2)‖w‖², solved exactly."""
    x, y, xr, yr = ridge
    n, d = x.shape
    lam = 0.05

    def w_eps(i: int, eps: float) -> torch.Tensor:
        a = x.T @ x / n + eps * torch.outer(x[i], x[i]) + lam * torch.eye(d, dtype=torch.float64)
        return torch.linalg.solve(a, x.T @ y / n + eps * y[i] * x[i])

    def ref_loss(w):
        return _sq_loss((w,), xr, yr).mean()

    w0 = w_eps(0, 0.0)
    got, _ = influence_on_reference(_sq_loss, (w0,), x, y, xr, yr, solver=CGOptions(damping=lam, tol=1e-13, max_iter=50))
    h = 1e-5
    fd = torch.stack([(ref_loss(w_eps(i, h)) - ref_loss(w_eps(i, -h))) / (2 * h) for i in range(n)])
    torch.testing.assert_close(got, fd, rtol=1e-6, atol=1e-9)


def test_influence_defense_equals_explicit_gradients():
    """The defense's jvp scores equal −G s with G from vmap per-sample gradients and s = (H+λI)⁻¹∇L_ref."""
    mixed, ref, _ = _planted()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, N_CLASS)).double()
    victim = _victim()
    d = build_defense("influence", {"damping": 0.1, "cg_tol": 1e-12, "cg_max_iter": 200, "params": "all"})
    scores = d.score(mixed, victim, generator=torch_generator(0, "d"), model=model, reference=ref).scores
    names = ["1.weight", "1.bias"]
    x, y = mixed.dataset.x.double(), mixed.dataset.y
    g = per_sample_grads(model, names, x, y, chunk_size=50)
    # dense Hessian of the mean training loss in the same flattening order, by autograd
    w0 = torch.cat([model[1].weight.detach().reshape(-1), model[1].bias.detach()])

    def mean_loss(flat):
        w, b = flat[:18].view(N_CLASS, 6), flat[18:]
        return torch.nn.functional.cross_entropy(x.flatten(1) @ w.T + b, y)

    def ref_loss(flat):
        w, b = flat[:18].view(N_CLASS, 6), flat[18:]
        return torch.nn.functional.cross_entropy(ref.x.double().flatten(1) @ w.T + b, ref.y)

    H = torch.autograd.functional.hessian(mean_loss, w0) + 0.1 * torch.eye(len(w0), dtype=torch.float64)
    s = torch.linalg.solve(H, torch.func.grad(ref_loss)(w0))
    torch.testing.assert_close(scores, -(g @ s), rtol=1e-7, atol=1e-10)


# ----------------------------------------------------------------- Sever: explicit SVD
def test_sever_scores_match_numpy_svd():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(12, 5, generator=g, dtype=torch.float64)
    grads[:3] += torch.tensor([3.0, 0, 0, 1, 0], dtype=torch.float64)
    c = grads.numpy() - grads.numpy().mean(0)
    _, _, vt = np.linalg.svd(c)
    expected = torch.from_numpy((c @ vt[0]) ** 2)
    torch.testing.assert_close(sever_scores(grads, method="exact"), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sever_scores(grads, method="randomized", generator=torch.Generator().manual_seed(1)),
                               expected, rtol=1e-8, atol=1e-10)


def test_sever_defense_one_round_matches_loop_gradients_and_svd():
    """One round: τ from per-sample gradients computed one point at a time by autograd + numpy SVD."""
    mixed, _, _ = _planted()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, N_CLASS)).double()
    d = build_defense("sever", {"rounds": 1, "svd": "exact"})
    got = d.score(mixed, _victim(), generator=torch_generator(0, "d"), model=model).scores
    rows = []
    for xi, yi in zip(mixed.dataset.x.double(), mixed.dataset.y):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        rows.append(torch.cat([model[1].weight.grad.reshape(-1), model[1].bias.grad]))
    c = torch.stack(rows).numpy()
    c = c - c.mean(0)
    v = np.linalg.svd(c)[2][0]
    torch.testing.assert_close(got, torch.from_numpy((c @ v) ** 2), rtol=1e-8, atol=1e-12)


def test_sever_rounds_retrain_and_stack():
    mixed, _, _ = _planted()
    victim = _victim()
    n = len(mixed)
    frac = 8 / n
    d = build_defense("sever", {"rounds": 2, "fraction": frac})
    scores = d.score(mixed, victim, generator=torch_generator(0, "d")).scores
    # by hand: round 1 on everything, round 2 on what round 1 kept, victim retrained from scratch
    k1, k2 = round_sizes(8, 2)
    ds = mixed.dataset

    def tau(sub):
        m = victim.spec.train(sub, victim.seed)
        return sever_scores(per_sample_grads(m, ["linear.weight", "linear.bias"], sub.x, sub.y)).double()

    t1 = tau(ds)
    first = torch.sort(t1, descending=True, stable=True).indices[:k1]
    rest = torch.tensor(sorted(set(range(n)) - set(first.tolist())))
    t2 = tau(ds.subset(rest))
    second = rest[torch.sort(t2, descending=True, stable=True).indices[:k2]]
    removed = set((~filter_scores(scores, frac)).nonzero().squeeze(1).tolist())
    assert removed == set(first.tolist()) | set(second.tolist())
    assert scores[first].min() > scores[second].max() > scores[rest[~torch.isin(rest, second)]].max()


# ----------------------------------------------------------------- centroid defenses, kNN, spectral
def test_sphere_and_slab_brute_force():
    mixed, _, _ = _planted()
    ds = mixed.dataset
    x = ds.x.flatten(1).double().numpy()
    y = ds.y.numpy()
    mu = np.stack([x[y == c].mean(0) for c in range(N_CLASS)])
    sphere = build_defense("sphere").score(mixed, _victim(), generator=torch_generator(0, "d")).scores
    torch.testing.assert_close(sphere, torch.from_numpy(np.array([np.linalg.norm(x[i] - mu[y[i]]) for i in range(len(x))])))
    centre = mu.mean(0)
    slab = build_defense("slab").score(mixed, _victim(), generator=torch_generator(0, "d")).scores
    expected = [abs((x[i] - mu[y[i]]) @ (mu[y[i]] - centre)) / np.linalg.norm(mu[y[i]] - centre) for i in range(len(x))]
    torch.testing.assert_close(slab, torch.tensor(expected, dtype=torch.float64))


def test_slab_binary_is_the_classic_slab():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 1, 3, generator=g, dtype=torch.float64)
    y = torch.arange(20) % 2
    mu, present = class_centroids(x, y, 2)
    got = slab_scores(x, y, mu, present)
    diff = mu[1] - mu[0]
    expected = ((x.flatten(1) - mu[y]) @ diff).abs() / diff.norm()
    torch.testing.assert_close(got, expected)


def test_sphere_reference_centroids():
    mixed, ref, _ = _planted()
    s = build_defense("sphere", {"centroids": "reference"}).score(mixed, _victim(), generator=torch_generator(0, "d"), reference=ref).scores
    mu, _ = class_centroids(ref.x, ref.y, N_CLASS)
    ds = mixed.dataset
    torch.testing.assert_close(s, (ds.x.flatten(1).double() - mu[ds.y]).norm(dim=1))


def test_knn_matches_brute_force():
    mixed, _, _ = _planted()
    k = 7
    ds = mixed.dataset
    got = build_defense("knn", {"k": k, "chunk_size": 17}).score(mixed, _victim(), generator=torch_generator(0, "d")).scores
    x = ds.x.flatten(1).double().numpy()
    y = ds.y.numpy()
    expected = []
    for i in range(len(x)):
        dist = np.linalg.norm(x - x[i], axis=1)
        dist[i] = np.inf
        nn_idx = np.argsort(dist, kind="stable")[:k]
        md = dist[nn_idx].mean()
        expected.append((y[nn_idx] != y[i]).mean() + md / (1 + md) / (2 * k))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_spectral_matches_numpy_svd_and_uses_penultimate_features():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.arange(30) % 3
    got = spectral_scores(feats, y, 3, method="exact")
    for c in range(3):
        r = feats[y == c].numpy()
        r = r - r.mean(0)
        v = np.linalg.svd(r)[2][0]
        torch.testing.assert_close(got[y == c], torch.from_numpy((r @ v) ** 2))
    victim = _victim("nn", hidden=[8, 5])
    model = victim.spec.build(0)
    x = torch.rand(4, 1, 2, 3)
    torch.testing.assert_close(head_features(model, x), model.features(x))
    lr = _victim().spec.build(0)
    torch.testing.assert_close(head_features(lr, x), x.flatten(1))


# ----------------------------------------------------------------- MaxUp
def test_worst_case_loss_is_the_max_over_explicit_draws():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double()
    x = torch.rand(5, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    got = worst_case_loss(model, x, y, 4, 0.2, torch.Generator().manual_seed(7), Bounds.unit())
    noise = torch.randn((4, *x.shape), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    per = torch.stack([torch.nn.functional.cross_entropy(model((x + 0.2 * noise[j]).clamp(0, 1)), y, reduction="none")
                       for j in range(4)])
    assert torch.equal(got, per.max(0).values)  # bit-identical to σ on the pixel scale, clipped to [0, 1]
    # drawn into a reused buffer (larger than one batch, as the training loop's last batch is smaller):
    # the same draws, batch after batch
    g, buffer = torch.Generator().manual_seed(7), torch.full((4 * 30 + 5,), float("nan"), dtype=torch.float64)
    assert torch.equal(worst_case_loss(model, x, y, 4, 0.2, g, Bounds.unit(), buffer), got)
    again = worst_case_loss(model, x[:3], y[:3], 4, 0.2, g, Bounds.unit(), buffer)
    g_fresh = torch.Generator().manual_seed(7)
    worst_case_loss(model, x, y, 4, 0.2, g_fresh, Bounds.unit())
    assert torch.equal(again, worst_case_loss(model, x[:3], y[:3], 4, 0.2, g_fresh, Bounds.unit()))


def test_maxup_perturbs_in_the_noise_buffer_with_the_same_values():
    """Data inputs are perturbed and clipped in the noise's own buffer; an input that needs a
    gradient takes the out-of-place path. Both give the same losses bit for bit, the input untouched."""
    b = Bounds.of(([-1.0, 0.0, 2.0, -3.0], [1.0, 0.5, 3.0, 3.0]), (4,))
    sigma = torch.tensor([0.5, 0.1, 2.0, 0.0])
    x = torch.tensor([[0.0, 0.25, 2.5, 1.0], [0.9, 0.0, 2.0, -2.0], [-1.0, 0.5, 3.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    kept = x.clone()
    fast = worst_case_loss(model, x, y, 5, sigma, torch.Generator().manual_seed(3), b)
    xg = x.clone().requires_grad_(True)
    slow = worst_case_loss(model, xg, y, 5, sigma, torch.Generator().manual_seed(3), b)
    assert torch.equal(fast, slow.detach()) and torch.equal(x, kept)
    z = torch.tensor([[-5.0, 0.25, 9.0, 1.0]])
    assert torch.equal(b.clamp_(z.clone()), b.clamp(z))
    with pytest.raises(ValueError, match="requires grad"):
        b.clamp_(z.requires_grad_(True))


def test_maxup_noise_on_the_data_scale_and_clipped_to_its_bounds():
    """σ relative to each feature's span (absolute where unbounded); the pixel box gives exactly σ, so
    images are unchanged; perturbations are clipped to the data's per-feature bounds."""
    from poisonlab.defenses.maxup import noise_std

    assert noise_std(Bounds.unit(), 0.1) == 0.1 and noise_std(Bounds.unit(), 0.1, "absolute") == 0.1
    assert noise_std(Bounds.of((-2.0, 2.0)), 0.1) == pytest.approx(0.4)
    per = noise_std(Bounds.of(([-1.0, -float("inf"), 0.0], [1.0, float("inf"), 10.0]), (3,)), 0.1)
    torch.testing.assert_close(per, torch.tensor([0.2, 0.1, 1.0], dtype=torch.float64))
    with pytest.raises(ConfigError):
        build_defense("maxup", {"scale": "pixels"})
    # the clip reads the bounds: with a huge σ every perturbed input sits on the box's faces
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.detach().clone())
            return torch.zeros(len(x), 2, requires_grad=True)

    b = Bounds.of(([-1.0, 0.0, 2.0], [1.0, 0.5, 3.0]), (3,))
    worst_case_loss(Spy(), torch.tensor([[0.0, 0.25, 2.5]]), torch.tensor([0]), 50, 1e3, torch.Generator().manual_seed(0), b)
    assert b.contains(seen[0]) and set(seen[0][:, 0].tolist()) == {-1.0, 1.0}
    # images: the scale rule gives bit-identical scores to σ on the pixel scale
    mixed, _, _ = _planted()
    victim = _victim()
    model = victim.spec.train(mixed.dataset, victim.seed)
    a = build_defense("maxup", {"m": 3, "sigma": 0.05}).score(mixed, victim, generator=torch_generator(0, "d"), model=model)
    c = build_defense("maxup", {"m": 3, "sigma": 0.05, "scale": "absolute"}).score(mixed, victim, generator=torch_generator(0, "d"),
                                                                                  model=model).scores
    assert torch.equal(a.scores, c) and a.info["noise_std_max"] == 0.05


def test_maxup_with_zero_noise_is_plain_training():
    mixed, _, _ = _planted()
    victim = _victim()
    d = build_defense("maxup", {"m": 2, "sigma": 0.0})
    g = torch_generator(0, "d")
    out = d.defend(mixed, victim, d.score(mixed, victim, generator=g), generator=g)
    plain = victim.spec.train(mixed.dataset, victim.seed)
    for a, b in zip(out.model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert out.n_removed == 0


def test_head_fast_path_equals_full_model_head_gradients():
    """For an MLP the head-only influence / Sever on frozen features equal the same quantities
    computed through the whole network with only the head parameters free."""
    mixed, ref, _ = _planted()
    victim = _victim("nn", hidden=[8, 5])
    model = victim.spec.train(mixed.dataset, victim.seed)
    ds = mixed.dataset
    names = ["head.weight", "head.bias"]
    _, params = named_params(model, names)
    full, _ = influence_on_reference(per_sample_loss_fn(model, names), params, ds.x, ds.y, ref.x, ref.y,
                                     solver=CGOptions(damping=0.01, tol=1e-7, max_iter=100))
    fast = build_defense("influence", {"cg_tol": 1e-7}).score(mixed, victim, generator=torch_generator(0, "d"),
                                                               model=model, reference=ref).scores
    torch.testing.assert_close(fast, full.double(), rtol=1e-4, atol=1e-6)
    tau_full = sever_scores(per_sample_grads(model, names, ds.x, ds.y).double(), method="exact")
    tau_fast = build_defense("sever", {"rounds": 1, "svd": "exact"}).score(mixed, victim, generator=torch_generator(0, "d"),
                                                                         model=model).scores
    torch.testing.assert_close(tau_fast, tau_full, rtol=1e-4, atol=1e-7)


def test_randomized_top_singular_vector_matches_exact():
    from poisonlab.defenses._grads import top_right_singular_vector

    g = torch.Generator().manual_seed(2)
    m = torch.randn(300, 40, generator=g, dtype=torch.float64)
    m[:20] += 2.0 * torch.randn(40, generator=g, dtype=torch.float64)  # a planted dominant direction
    exact = top_right_singular_vector(m, method="exact")
    # subspace iteration error ~ (σ_{q+1}/σ_1)^(2·niter) = (21.6/55.6)^60 ≈ 1e-25: converged to round-off
    fast = top_right_singular_vector(m, method="randomized", generator=torch.Generator().manual_seed(0), q=4, niter=30)
    torch.testing.assert_close(fast, exact, rtol=1e-10, atol=1e-12)
    assert torch.linalg.vector_norm(fast).item() == pytest.approx(1.0, abs=1e-12)


def _brute_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(d, idx, 1)


def test_knn_float32_screen_finds_the_float64_neighbours():
    """The float32 screen keeps 2k + 16 candidates of 499 rows; the neighbours are the float64 ones
    (indices and distances), at a scale (‖x‖² ≈ 10⁴) where float32 alone would misorder close pairs."""
    from poisonlab.defenses.knn import knn_indices

    g = np.random.default_rng(0)
    centres = g.normal(0, 30, (5, 40))
    x = centres[g.integers(0, 5, 500)] + g.normal(0, 1, (500, 40))
    x[1] = x[0] + 1e-4  # a pair far closer than float32's resolution of these distances
    idx, dist = knn_indices(torch.tensor(x), 6, chunk_size=97)
    want_idx, want_dist = _brute_knn(x, 6)
    assert np.array_equal(idx.numpy(), want_idx)
    np.testing.assert_allclose(dist.numpy(), want_dist, rtol=1e-9, atol=1e-9)


def test_knn_rows_the_screen_cannot_vouch_for_are_computed_in_float64():
    """One-hot rows are all √2 apart: no float32 gap separates the k-th from the m-th candidate, so every
    row falls back to all N float64 distances — still exactly √2, self excluded."""
    from poisonlab.defenses.knn import knn_indices

    x = torch.eye(60, dtype=torch.float64)
    x[59] = x[58]  # plus one exact duplicate pair: distance 0
    idx, dist = knn_indices(x, 3, chunk_size=16)
    assert idx[58, 0] == 59 and idx[59, 0] == 58 and dist[58, 0] == 0.0
    assert (idx != torch.arange(60)[:, None]).all()
    torch.testing.assert_close(dist[:58], torch.full((58, 3), 2.0 ** 0.5, dtype=torch.float64))
