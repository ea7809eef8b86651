"""Reachability theory checked against brute force: dense grids, LP feasibility, autograd, restarts."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from poisonlab.theory import (
    binary_reachability,
    ce_lower_bound,
    eps_of_rho,
    lambert_w,
    least_squares_reachability,
    margin_extremes,
    min_poison_count,
    mixed_gradient_norm,
    multiclass_reachability,
    rho_of_eps,
    trace_statistic,
    univariate_check,
)
from poisonlab.theory.margin import MARGIN_LOSSES, margin_statistic

W1E = 0.27846454276107379510  # Lambert W(1/e), the omega-like constant of eq. 3.4


def test_known_constants():
    assert lambert_w(1 / math.e) == pytest.approx(W1E, abs=1e-15)
    assert lambert_w(math.e) == pytest.approx(1.0, abs=1e-14)
    assert margin_extremes("logistic")[0] == pytest.approx(-W1E, abs=1e-15)
    assert margin_extremes("exponential")[0] == pytest.approx(-1 / math.e, abs=1e-15)
    assert margin_extremes("hinge")[0] == -1.0
    for loss in MARGIN_LOSSES:
        assert margin_extremes(loss)[1] == math.inf
    assert ce_lower_bound(2) == pytest.approx(-W1E, abs=1e-15)
    # logistic, eq. 3.4: τ = ⟨w, g⟩ / W(1/e)
    assert binary_reachability(0.05).tau == pytest.approx(0.05 / W1E, rel=1e-14)
    assert binary_reachability(-0.05).tau == 0.0


@pytest.mark.parametrize("loss", sorted(MARGIN_LOSSES))
@pytest.mark.parametrize("interval", [(-math.inf, math.inf), (-3.0, 0.5), (0.3, 7.0), (2.0, math.inf), (-math.inf, -1.0), (1.2, 1.4)])
def test_margin_extremes_match_dense_grid(loss, interval):
    lo, hi = interval
    a, b, _, _ = margin_extremes(loss, interval)
    t = torch.linspace(max(lo, -60.0), min(hi, 60.0), 400001, dtype=torch.float64)
    phi = MARGIN_LOSSES[loss].phi(t)
    if loss == "hinge" and lo <= 1.0 <= hi:  # the subgradient set at the kink is [−1, 0]
        phi = torch.cat([phi, torch.tensor([-1.0, 0.0], dtype=torch.float64)])
    assert a == pytest.approx(phi.min().item(), abs=1e-8)
    if math.isinf(lo):
        assert b == math.inf
    elif math.isinf(hi) and phi.max().item() < 0:
        assert b == 0.0  # the limit at +∞, approached from below
    else:
        assert b == pytest.approx(phi.max().item(), abs=1e-8)


def _g1(x, w):  # 1-D logistic gradient of l(w·x̃) at x̃: l'(t)·x̃ with l' = −σ(−t)
    return -x / (1.0 + np.exp(w * x))


def test_binary_threshold_matches_brute_force_1d():
    """In 1-D, G = [min g, max g] over the box: scan ρ and compare the smallest feasible one."""
    rng = np.random.default_rng(0)
    w, R = -1.3, 4.0
    clean = rng.uniform(-1.0, 1.5, 40)  # clean x̃ (labels absorbed)
    g_mu = _g1(clean, w).mean()
    inner = w * g_mu
    grid = np.linspace(-R, R, 2_000_001)
    gv = _g1(grid, w)
    lo, hi = gv.min(), gv.max()
    rhos = np.linspace(1e-4, 1 - 1e-4, 200001)
    need = -(1 - rhos) / rhos * g_mu
    feasible = rhos[(need >= lo) & (need <= hi)]
    r = binary_reachability(inner, "logistic", (-R * abs(w), R * abs(w)))
    assert feasible.min() == pytest.approx(r.rho_min, abs=2e-5)
    assert r.tau > 0 and not r.exact


def _lp_feasible(G: np.ndarray, target: np.ndarray) -> bool:
    n = G.shape[0]
    res = linprog(np.zeros(n), A_eq=np.vstack([G.T, np.ones((1, n))]), b_eq=np.append(target, 1.0),
                  bounds=[(0, None)] * n, method="highs")
    return res.status == 0


def _lp_threshold(G, g_mu):
    lo, hi = 1e-4, 1 - 1e-4
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if _lp_feasible(G, -(1 - mid) / mid * g_mu):
            hi = mid
        else:
            lo = mid
    return hi


@pytest.mark.parametrize("loss", ["logistic", "exponential"])
def test_binary_threshold_matches_lp_over_distributions_2d(loss):
    """Reachability = convex-hull membership (Theorem 1): an LP over distributions on a fine grid.
    With a box large enough for the orthogonal direction, the LP threshold equals eq. 3.3."""
    torch.manual_seed(0)
    w = np.array([1.0, -0.5])
    clean = np.random.default_rng(1).normal(size=(30, 2)) * 0.6 + np.array([-0.4, 0.3])
    phi = MARGIN_LOSSES[loss].phi
    lprime = lambda t: (phi(torch.from_numpy(t)) / torch.from_numpy(t)).numpy()  # l'(t) (t ≠ 0)
    t_clean = clean @ w
    g_mu = (lprime(t_clean)[:, None] * clean).mean(0)
    inner = float(w @ g_mu)
    assert inner > 0
    R = 12.0
    ax = np.linspace(-R, R, 161) + 1e-7
    X = np.stack(np.meshgrid(ax, ax), -1).reshape(-1, 2)
    G = lprime(X @ w)[:, None] * X
    rho_lp = _lp_threshold(G, g_mu)
    r = binary_reachability(inner, loss)
    assert r.exact
    assert rho_lp >= r.rho_min - 1e-6  # necessary everywhere
    assert rho_lp == pytest.approx(r.rho_min, rel=0.02)  # and tight here (grid resolution)
    assert r.reachable(eps_of_rho(rho_lp) * 1.001) and not r.reachable(eps_of_rho(r.rho_min) * 0.98)


def test_negative_inner_product_reachable_for_every_eps_and_hinge_and_least_squares():
    r = binary_reachability(-0.3, "hinge")
    assert r.tau == 0.0 and not r.attained and r.reachable(1e-9) and not r.reachable(0.0)
    # hinge, bounded: t ∈ [−2, 3] ⇒ b = 2 (at t = −2), τ = 0.3/2
    r = binary_reachability(-0.3, "hinge", (-2.0, 3.0))
    assert r.b == 2.0 and r.tau == pytest.approx(0.15)
    ls = least_squares_reachability(0.7)
    assert ls.tau == 0.0 and ls.exact and ls.reachable(1e-12) and not ls.reachable(0.0)
    # brute force for least squares: any value v of (wx − y)x is hit by x = 1, y = w − v
    w, v = 0.8, -123.0
    assert (w * 1 - (w - v)) * 1 == pytest.approx(v)
    # a ≥ 0: poisons can never pull ⟨w, g⟩ below 0 ⇒ unreachable
    r = binary_reachability(0.1, "logistic", (-5.0, -0.1))
    assert r.tau == math.inf and not r.reachable(1.0)


@pytest.mark.parametrize("c", [2, 3, 5, 10])
def test_ce_lower_bound_against_numerical_minimisation(c):
    rng = np.random.default_rng(c)

    def f(h):  # y = class 0 by symmetry
        p = np.exp(h - h.max())
        p /= p.sum()
        p[0] -= 1.0
        return float(h @ p)

    best = min(minimize(f, rng.normal(scale=s, size=c), method="BFGS").fun for s in (0.3, 1, 3, 6) for _ in range(3))
    assert best == pytest.approx(ce_lower_bound(c), abs=1e-7)
    h_star = np.zeros(c)
    h_star[0] = 1 + lambert_w((c - 1) / math.e)
    assert f(h_star) == pytest.approx(ce_lower_bound(c), abs=1e-13)


def test_two_class_cross_entropy_recovers_binary_logistic():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(100, 2, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 2, (100,), generator=g)
    t = (2 * y - 1).double() * (h[:, 1] - h[:, 0])
    assert trace_statistic(h, y) == pytest.approx(margin_statistic(t, "logistic"), abs=1e-13)
    assert multiclass_reachability(h, y).tau == pytest.approx(binary_reachability(margin_statistic(t)).tau, rel=1e-12)


def _mean_ce_grad_dot(model, last: nn.Linear, x, y):
    params = [last.weight, last.bias]
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params)
    return sum((p * g).sum() for p, g in zip(params, grads)).item()


def test_trace_statistic_is_inner_product_with_last_layer_gradient():
    """⟨W, G(μ)⟩ = E⟨h, p − y⟩ (Example 3) and its Theorem-4 version on an MLP's last layer."""
    torch.manual_seed(0)
    x = torch.randn(60, 7, dtype=torch.float64)
    y = torch.randint(0, 4, (60,))
    lin = nn.Linear(7, 4).double()
    assert trace_statistic(lin(x), y) == pytest.approx(_mean_ce_grad_dot(lin, lin, x, y), abs=1e-12)
    head = nn.Linear(5, 4).double()
    mlp = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), head).double()
    assert trace_statistic(mlp(x), y) == pytest.approx(_mean_ce_grad_dot(mlp, head, x, y), abs=1e-12)


def test_multiclass_condition_is_necessary_on_random_poisons():
    """For any poison set, ε below τ leaves ⟨W, ∇ on the mixed set⟩ > 0: never stationary."""
    torch.manual_seed(1)
    lin = nn.Linear(6, 3).double()
    x = torch.randn(80, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (80,))
    with torch.no_grad():
        lin.weight.mul_(3)
    r = multiclass_reachability(lin(x), y)
    assert r.tau > 0
    for k in (1, 5, int(r.tau * 80 * 0.95)):
        xp = torch.randn(k, 6, dtype=torch.float64) * 5
        yp = torch.randint(0, 3, (k,))
        xm, ym = torch.cat([x, xp]), torch.cat([y, yp])
        assert _mean_ce_grad_dot(lin, lin, xm, ym) > 0


def test_univariate_check_with_matrix_A():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    base = multiclass_reachability(h, y)
    scaled = univariate_check(h, y, 2.5 * torch.eye(3, dtype=torch.float64))
    assert scaled.tau == pytest.approx(base.tau, rel=1e-5)  # numeric bound, scale-invariant ratio
    assert scaled.a == pytest.approx(2.5 * ce_lower_bound(3), rel=1e-5)
    skew = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    vac = univariate_check(h, y, skew)  # Aᵀ1 not ∝ 1: shifting h makes the bounds infinite
    assert vac.tau == 0.0 and math.isinf(vac.a) and math.isinf(vac.b)


def test_budget_conversions_and_min_count():
    for eps in (0.0, 0.03, 0.5, 1.0, 7.0):
        assert eps_of_rho(rho_of_eps(eps)) == pytest.approx(eps)
    assert min_poison_count(0.03, 1000) == 30
    assert min_poison_count(0.0301, 1000) == 31
    assert min_poison_count(0.03, 1000, attained=False) == 31
    assert min_poison_count(math.inf, 10) == math.inf


def test_mixed_gradient_norm_equals_gradient_over_the_union():
    torch.manual_seed(2)
    lin = nn.Linear(4, 3).double()
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    xp, yp = torch.rand(20, 4, dtype=torch.float64), torch.randint(0, 3, (20,))

    def grad(xx, yy):
        gs = torch.autograd.grad(nn.functional.cross_entropy(lin(xx), yy), list(lin.parameters()))
        return torch.cat([g.reshape(-1) for g in gs])

    union = grad(torch.cat([x, xp]), torch.cat([y, yp])).norm().item()
    assert mixed_gradient_norm(grad(x, y), grad(xp, yp), 20 / 50) == pytest.approx(union, rel=1e-12)
    assert mixed_gradient_norm(grad(x, y), None, 0.0) == pytest.approx(grad(x, y).norm().item())


# ---------------------------------------------------------------- box-bounded poisons (theory/box.py)
def _ce_grads(W: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Per-point cross-entropy gradients w.r.t. [W | b] for h = W [x; 1]: (N, C, d+1)."""
    Xt = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    P = torch.softmax(Xt @ W.T, 1)
    P[torch.arange(len(Y)), Y] -= 1.0
    return P[:, :, None] * Xt[:, None, :]


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-0.5, 2.0)])
def test_box_support_bound_dominates_brute_force(lo, hi):
    from poisonlab.theory.box import box_support_bound

    g = torch.Generator().manual_seed(0)
    C, d = 3, 2
    grid = torch.linspace(lo, hi, 41, dtype=torch.float64)
    X = torch.cartesian_prod(grid, grid)
    for _ in range(20):
        V = torch.randn(C, d + 1, generator=g, dtype=torch.float64)
        W = 3 * torch.randn(C, d + 1, generator=g, dtype=torch.float64)
        best = max(float((_ce_grads(W, X, torch.full((len(X),), y)) * V).sum((1, 2)).max()) for y in range(C))
        assert best <= box_support_bound(V, lo, hi) + 1e-12
    # tight for a confident model whose worst label is the one the bound picks: close to equality
    V = torch.randn(C, d + 1, generator=g, dtype=torch.float64)
    assert box_support_bound(V, lo, hi) >= 0


def test_box_threshold_is_below_the_lp_minimum_over_a_grid_of_poisons():
    """The smallest ε for which a poison mix on a grid of box inputs × all labels cancels g(μ)
    exactly (an LP) can only be larger than the minimum over the whole box, hence ≥ τ_gauge ≥ τ_box;
    and ≥ τ of eq. 3.6 too."""
    from poisonlab.theory.box import linear_box_gauge, linear_box_threshold

    g = torch.Generator().manual_seed(1)
    C, d = 3, 2
    grid = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    Xg = torch.cartesian_prod(grid, grid)
    checked = 0
    for trial in range(12):
        Xc = torch.rand(60, d, generator=g, dtype=torch.float64)
        Yc = torch.randint(C, (60,), generator=g)
        W = torch.randn(C, d + 1, generator=g, dtype=torch.float64)
        gmu = _ce_grads(W, Xc, Yc).mean(0)
        cand = torch.cat([_ce_grads(W, Xg, torch.full((len(Xg),), y)) for y in range(C)]).reshape(-1, C * (d + 1))
        res = linprog(np.ones(len(cand)), A_eq=cand.T.numpy(), b_eq=-gmu.flatten().numpy(), bounds=(0, None), method="highs")
        if res.status != 0:
            continue  # not reachable with these grid points at any ε
        eps_min = float(res.x.sum())
        tau_box = linear_box_threshold(gmu)
        assert eps_min >= tau_box - 1e-9
        # the gauge is the exact minimum over the relaxation: between τ_box and the grid's LP minimum
        gauge = linear_box_gauge(gmu)
        assert tau_box - 1e-9 <= gauge.tau <= eps_min + 1e-7
        assert gauge.plan.min() >= -1e-12 and math.isclose(gauge.label_mass.sum(), gauge.tau, rel_tol=1e-7, abs_tol=1e-12)
        Xt = torch.cat([Xc, torch.ones(len(Xc), 1, dtype=Xc.dtype)], 1)
        assert eps_min >= multiclass_reachability(Xt @ W.T, Yc).tau - 1e-9
        checked += 1
    assert checked >= 4


def test_box_threshold_edge_cases():
    from poisonlab.theory.box import box_support_bound, linear_box_threshold

    assert linear_box_threshold(torch.zeros(3, 5)) == 0.0
    with pytest.raises(ValueError):
        box_support_bound(torch.zeros(1, 5))
    with pytest.raises(ValueError):
        box_support_bound(torch.zeros(3, 5), lo=1.0, hi=0.0)
    # scaling g scales τ_box linearly (‖g‖² over a support bound linear in g)
    G = torch.randn(4, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert math.isclose(linear_box_threshold(3 * G), 3 * linear_box_threshold(G), rel_tol=1e-12)


def test_box_gauge_is_exact_on_a_single_confident_poison_and_scales():
    """g(μ) = −t·(e_0 − e_2)[x*; 1]ᵀ for a box point x* is cancelled by mass t of poisons at x*,
    labelled 2 and classified 0: the gauge is t and its plan puts all mass on (0, 2)."""
    from poisonlab.theory.box import linear_box_gauge, linear_box_threshold

    x_star = torch.tensor([1.0, 0.0, 0.3, 1.0], dtype=torch.float64)
    G = torch.zeros(3, 5, dtype=torch.float64)
    G[0, :4], G[0, 4] = -x_star, -1.0
    G[2, :4], G[2, 4] = x_star, 1.0
    gauge = linear_box_gauge(0.07 * G)
    assert math.isclose(gauge.tau, 0.07, rel_tol=1e-7)
    assert math.isclose(gauge.plan[0, 2], 0.07, rel_tol=1e-6) and gauge.plan.sum() - gauge.plan[0, 2] < 1e-8
    assert gauge.tau >= linear_box_threshold(0.07 * G) - 1e-12
    R = torch.randn(4, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    R -= R.mean(0)
    assert math.isclose(linear_box_gauge(3 * R).tau, 3 * linear_box_gauge(R).tau, rel_tol=1e-6)
    assert linear_box_gauge(torch.zeros(3, 5)).tau == 0.0
    # homogeneous down to tiny gradients (near a clean optimum), and inf for a degenerate box
    assert math.isclose(linear_box_gauge(1e-6 * R).tau, 1e-6 * linear_box_gauge(R).tau, rel_tol=1e-6)
    assert linear_box_gauge(R, 0.5, 0.5).tau == math.inf
    # a wider box makes cancelling easier
    assert linear_box_gauge(R, -1.0, 2.0).tau <= linear_box_gauge(R).tau + 1e-9
    with pytest.raises(ValueError):
        linear_box_gauge(R, lo=1.0, hi=0.0)


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-0.5, 2.0)])
def test_box_gauge_dual_direction_certifies_tau(lo, hi):
    """Strong duality: the returned V has σ̄(V) ≤ 1 and ⟨−g, V⟩ = τ_gauge, and −V is the derivative
    of τ_gauge in g (finite differences along random centred directions)."""
    from poisonlab.theory.box import box_support_bound, linear_box_gauge

    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        G = torch.randn(4, 6, generator=gen, dtype=torch.float64)
        G -= G.mean(0)
        gauge = linear_box_gauge(G, lo, hi)
        V = torch.from_numpy(gauge.direction)
        assert box_support_bound(V, lo, hi) <= 1 + 1e-7
        assert math.isclose(float((-G * V).sum()), gauge.tau, rel_tol=1e-6)
        D = torch.randn(4, 6, generator=gen, dtype=torch.float64)
        D -= D.mean(0)
        h = 1e-6
        fd = (linear_box_gauge(G + h * D, lo, hi).tau - linear_box_gauge(G - h * D, lo, hi).tau) / (2 * h)
        assert math.isclose(fd, float((-V * D).sum()), rel_tol=1e-4, abs_tol=1e-7)



@pytest.mark.parametrize("box", ["unit", "wide", "per_feature", "degenerate_feature", "infinite_side"])
def test_box_gauge_cut_form_equals_the_pair_programme(box):
    """The cut form (pair masses only, one row per class subset) solves the programme as written:
    same τ_gauge, a plan of that mass, and a direction V that certifies it (σ̄(V) ≤ 1, ⟨−g, V⟩ = τ)."""
    from poisonlab.theory.box import box_support_bound, linear_box_gauge

    rng = np.random.default_rng(["unit", "wide", "per_feature", "degenerate_feature", "infinite_side"].index(box))
    for _ in range(8):
        C, d = int(rng.integers(2, 6)), int(rng.integers(1, 7))
        G = torch.from_numpy(rng.normal(size=(C, d + 1)))
        lo, hi = {"unit": (0.0, 1.0), "wide": (-1.0, 2.0)}.get(box, (None, None))
        if lo is None:
            lo = rng.uniform(-1, 0.5, d)
            hi = lo + rng.uniform(0.1, 2, d)
            if box == "degenerate_feature":
                hi[0] = lo[0]
            if box == "infinite_side":
                hi[-1] = np.inf
        pairs = linear_box_gauge(G, lo, hi, formulation="pairs")
        cuts = linear_box_gauge(G, lo, hi, formulation="cuts")
        assert math.isclose(cuts.tau, pairs.tau, rel_tol=1e-7, abs_tol=1e-12)
        if math.isinf(pairs.tau):  # a degenerate feature no mix can match: both infeasible
            continue
        assert math.isclose(cuts.plan.sum(), cuts.tau, rel_tol=1e-7, abs_tol=1e-12)
        assert (cuts.plan >= -1e-12).all() and (np.diag(cuts.plan) == 0).all()
        V = torch.from_numpy(cuts.direction)
        assert box_support_bound(V, lo, hi) <= 1 + 1e-7
        assert math.isclose(float((-(G - G.mean(0)) * V).sum()), cuts.tau, rel_tol=1e-6, abs_tol=1e-12)


def test_box_gauge_cut_form_adds_violated_rows(monkeypatch):
    """Past CUT_ROWS rows the cut form starts from the largest and adds violated ones until none is
    left: the same τ_gauge as one solve with every row."""
    import poisonlab.theory.box as box

    rng = np.random.default_rng(7)
    G = torch.from_numpy(rng.normal(size=(5, 9)))
    lo = rng.uniform(-1, 0, 8)
    hi = lo + rng.uniform(0.5, 2, 8)
    full = box.linear_box_gauge(G, lo, hi, formulation="cuts")
    monkeypatch.setattr(box, "CUT_ROWS", 5)
    assert math.isclose(box.linear_box_gauge(G, lo, hi, formulation="cuts").tau, full.tau, rel_tol=1e-7)
    with pytest.raises(ValueError, match="formulation"):
        box.linear_box_gauge(G, lo, hi, formulation="dual")


def _fit_ridge_softmax(X: np.ndarray, Y: np.ndarray, C: int, lam: float) -> np.ndarray:
    """argmin mean CE + (lam/2)‖W‖² (bias free) of a linear softmax model, to high precision: [W | b]."""
    N, d = X.shape
    Xt, Yo = np.hstack([X, np.ones((N, 1))]), np.eye(C)[Y]

    def f(wf):
        W = wf.reshape(C, d + 1)
        H = Xt @ W.T
        H -= H.max(1, keepdims=True)
        P = np.exp(H)
        P /= P.sum(1, keepdims=True)
        G = (P - Yo).T @ Xt / N
        G[:, :-1] += lam * W[:, :-1]
        return -np.log(P[np.arange(N), Y]).mean() + 0.5 * lam * (W[:, :-1] ** 2).sum(), G.ravel()

    r = minimize(f, np.zeros(C * (d + 1)), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000})
    assert np.abs(r.jac).max() < 1e-6
    return r.x.reshape(C, d + 1)


@pytest.mark.parametrize("kind,frac", [("flip", 0.02), ("flip", 0.1), ("uniform", 0.05)])
def test_box_gauge_never_exceeds_the_fraction_that_produced_a_model(kind, frac):
    """The gauge is a necessary condition: a model that ε·N real box-bounded poisons did produce
    (retraining on digits ∪ poisons to the ridge minimiser) must have τ_gauge ≤ ε. With weight decay λ,
    stationarity reads g(μ) + (1+ε)λ[W | 0] = −ε·g(ν), so that is the gradient the gauge gets."""
    from poisonlab.data import load_dataset
    from poisonlab.theory.box import linear_box_gauge, linear_box_threshold

    train = load_dataset("digits").train
    X, Y, C = train.x.flatten(1).double().numpy(), train.y.numpy(), 10
    rng = np.random.default_rng(0)
    n = int(frac * len(X))
    if kind == "flip":  # label-flipped clean images
        idx = rng.choice(len(X), n, replace=False)
        Xp, Yp = X[idx], (Y[idx] + 1) % C
    else:  # uniform noise images with random labels
        Xp, Yp = rng.random((n, X.shape[1])), rng.integers(0, C, n)
    eps, lam = n / len(X), 1e-3
    W = _fit_ridge_softmax(np.vstack([X, Xp]), np.concatenate([Y, Yp]), C, lam)
    Xt = np.hstack([X, np.ones((len(X), 1))])
    H = Xt @ W.T
    P = np.exp(H - H.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    G = (P - np.eye(C)[Y]).T @ Xt / len(X)
    G[:, :-1] += (1 + eps) * lam * W[:, :-1]
    G = torch.from_numpy(G)
    gauge = linear_box_gauge(G).tau
    assert gauge <= eps * (1 + 1e-4)
    assert gauge >= linear_box_threshold(G) * (1 - 1e-6) - 1e-9  # up to the LP's tolerance
    if kind == "flip":
        assert gauge > 0.5 * eps  # informative: flipped labels need most of the fraction they have
