"""A necessary condition for box-bounded poisons on multiclass linear softmax models.

The thresholds of eq. 3.4 / 3.6 allow poisons with *any* input. Images live in a box (pixels in
[lo, hi]), and then the poisons' gradients are bounded too. For h = W x̃ (x̃ = [x; 1], W of shape
(C, d+1), bias in the last column) and cross-entropy, one poison z = (x, y) has gradient
G(z) = (p(x) − e_y) x̃ᵀ. Reachability at fraction ε asks for a poison distribution ν with
g(ν) = −g(μ)/ε (eq. 3.5 with (1−ρ)/ρ = 1/ε). For any direction V,

    ⟨V, G(z)⟩ = E_{p(x)}[u] − u_y ≤ max_k u_k − min_l u_l,     u_k = ⟨V_k, x̃⟩,

so ⟨V, g(ν)⟩ ≤ σ̄(V) := max_{k,l} sup_{x ∈ box} ⟨V_k − V_l, x̃⟩ (closed form: a linear function on a
box), and taking V = −g(μ):

    ε ≥ τ_box = ‖g(μ)‖² / σ̄(−g(μ)).

Like τ it needs no training and no poison: only the clean mean gradient at the target. It is a
necessary condition (the bound on ⟨V, G(z)⟩ is not tight in general), complementary to eq. 3.6,
which constrains the direction W itself and ignores the box.

τ_box uses the one direction V = −g(μ). The best direction gives the *gauge* (:func:`linear_box_gauge`):
every poison gradient lies in conv(S ∪ {0}) with S = {(e_k − e_l) x̃ᵀ : k ≠ l, x ∈ box}, because
p − e_y = Σ_{k≠y} p_k (e_k − e_y) with Σ_{k≠y} p_k ≤ 1, so reachability needs

    ε ≥ τ_gauge = min { t : −g(μ) ∈ t·conv(S ∪ {0}) } = max_V ⟨−g(μ), V⟩ / σ̄(V)  ≥ τ_box.

Writing −g(μ) = Σ_{k≠l} (e_k − e_l) m_klᵀ with m_kl = Σ λ x̃ a non-negative mix of box points, i.e.
m_kl = [u_kl; c_kl] with lo·c_kl ≤ u_kl ≤ hi·c_kl, τ_gauge is the linear programme
min Σ c_kl. Its solution is a *plan*: c_kl is the poison mass (in ε units) that the target must
classify as k while it is labelled l — a label mix an attack can start from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def box_support_bound(V: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> float:
    """σ̄(V) = max_{k,l} sup_{x ∈ [lo, hi]^d} ⟨V_k − V_l, [x; 1]⟩ for V of shape (C, d+1) (bias last).

    An upper bound of sup over box inputs x and labels y of ⟨V, (softmax(Wx̃) − e_y) x̃ᵀ⟩, for every W.
    """
    if V.ndim != 2 or V.shape[0] < 2 or V.shape[1] < 2:
        raise ValueError(f"need V of shape (C >= 2, d + 1 >= 2), got {tuple(V.shape)}")
    if not lo <= hi:
        raise ValueError(f"need lo <= hi, got [{lo}, {hi}]")
    V = V.detach().double()
    D = V[:, None, :] - V[None, :, :]  # (C, C, d+1): V_k − V_l
    lin = torch.maximum(D[..., :-1] * lo, D[..., :-1] * hi).sum(-1) + D[..., -1]
    return float(lin.max())


def linear_box_threshold(grad_mean: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> float:
    """τ_box = ‖g(μ)‖² / σ̄(−g(μ)) in ε-units (reachable needs ε ≥ τ_box); 0 when g(μ) = 0.

    ``grad_mean`` (C, d+1): the mean cross-entropy gradient over the clean data at the target, with
    respect to [W | b] (weights of the C classes, bias in the last column).
    """
    g = grad_mean.detach().double()
    g = g - g.mean(0, keepdim=True)  # a cross-entropy gradient's columns sum to 0 over the classes
    sq = float((g * g).sum())
    if sq == 0.0:
        return 0.0
    sigma = box_support_bound(-g, lo, hi)
    return sq / sigma if sigma > 0 else float("inf")


@dataclass(frozen=True)
class BoxGauge:
    """``tau``: the gauge threshold in ε-units; ``plan[k, l]``: poison mass (ε units, sums to tau)
    classified k and labelled l; ``label_mass[l] = Σ_k plan[k, l]``; ``direction`` (C, d+1): the
    optimal V of the dual, max ⟨−g, V⟩ s.t. σ̄(V) ≤ 1 (so tau = ⟨−g, V⟩, and −V is ∂tau/∂g)."""

    tau: float
    plan: np.ndarray
    direction: np.ndarray

    @property
    def label_mass(self) -> np.ndarray:
        return self.plan.sum(0)


def linear_box_gauge(grad_mean: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> BoxGauge:
    """τ_gauge ≥ τ_box: the exact threshold of the relaxation above, by a sparse linear programme
    (HiGHS). ``grad_mean`` (C, d+1) as for :func:`linear_box_threshold`. Its columns are centred over
    the classes first (a cross-entropy gradient's are, up to rounding). ``tau`` is inf when no poison
    mix can cancel g (a degenerate box, lo == hi). Cost: C(C−1)·(d+1) variables; seconds for MNIST LR
    gradients, but up to about a minute for unstructured (random) ones of that size."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack

    if not lo <= hi:
        raise ValueError(f"need lo <= hi, got [{lo}, {hi}]")
    g = grad_mean.detach().double().cpu().numpy()
    if g.ndim != 2 or g.shape[0] < 2 or g.shape[1] < 2:
        raise ValueError(f"need grad_mean of shape (C >= 2, d + 1 >= 2), got {tuple(g.shape)}")
    g = g - g.mean(0, keepdims=True)
    C, d1 = g.shape
    d = d1 - 1
    scale = float(np.abs(g).max())
    if scale == 0.0:
        return BoxGauge(0.0, np.zeros((C, C)), np.zeros((C, d1)))
    g = g / scale  # the gauge is homogeneous: solve at unit size (HiGHS tolerances are absolute)
    pairs = [(k, l) for k in range(C) for l in range(C) if k != l]
    P = len(pairs)
    ks = np.array([k for k, _ in pairs])
    ls = np.array([l for _, l in pairs])
    # variables: u[p, i] at p*d + i (pixels), then c[p] at P*d + p (bias mass)
    n_u, n_var = P * d, P * d + P
    pix = np.arange(d)
    rows, cols, vals = [], [], []
    for p in range(P):  # pixel rows: class m, pixel i -> m*d1 + i ; bias row m*d1 + d
        for cls, sign in ((ks[p], 1.0), (ls[p], -1.0)):
            rows.append(cls * d1 + pix)
            cols.append(p * d + pix)
            vals.append(np.full(d, sign))
            rows.append(np.array([cls * d1 + d]))
            cols.append(np.array([n_u + p]))
            vals.append(np.array([sign]))
    A_eq = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(C * d1, n_var)).tocsr()
    b_eq = -g.reshape(-1)
    # u - hi*c <= 0 and lo*c - u <= 0, one row per (pair, pixel)
    r = np.arange(n_u)
    c_of = n_u + np.repeat(np.arange(P), d)
    upper = coo_matrix((np.concatenate([np.ones(n_u), np.full(n_u, -hi)]), (np.concatenate([r, r]), np.concatenate([r, c_of]))),
                       shape=(n_u, n_var))
    blocks = [upper]
    if lo != 0.0:
        blocks.append(coo_matrix((np.concatenate([-np.ones(n_u), np.full(n_u, lo)]), (np.concatenate([r, r]), np.concatenate([r, c_of]))),
                                 shape=(n_u, n_var)))
    A_ub = vstack(blocks).tocsr()
    bounds = [(0.0, None) if lo == 0.0 else (None, None)] * n_u + [(0.0, None)] * P
    cost = np.concatenate([np.zeros(n_u), np.ones(P)])
    res = linprog(cost, A_ub=A_ub, b_ub=np.zeros(A_ub.shape[0]), A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if res.status == 2:  # infeasible: only a degenerate box (lo == hi) cannot span the pixel rows
        return BoxGauge(float("inf"), np.full((C, C), np.nan), np.full((C, d1), np.nan))
    if res.status != 0:
        raise RuntimeError(f"linear_box_gauge: the LP did not solve ({res.message})")
    plan = np.zeros((C, C))
    plan[ks, ls] = res.x[n_u:] * scale
    # ∂tau/∂b_eq = the equality marginals; b_eq = −g, so V = marginals (centred like g; scale-free)
    V = np.asarray(res.eqlin.marginals, dtype=np.float64).reshape(C, d1)
    return BoxGauge(float(res.fun) * scale, plan, V - V.mean(0, keepdims=True))


__all__ = ["BoxGauge", "box_support_bound", "linear_box_gauge", "linear_box_threshold"]
