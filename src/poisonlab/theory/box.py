"""A necessary condition for box-bounded poisons on multiclass linear softmax models.

The thresholds of eq. 3.4 / 3.6 allow poisons with *any* input. Inputs live in a box — the data's
bounds: pixels in [0, 1], or per-feature ranges [lo_i, hi_i] for tabular data (``lo`` / ``hi`` below
are scalars or one value per feature of the flattened input; ±inf allowed) — and then the poisons'
gradients are bounded too. For h = W x̃ (x̃ = [x; 1], W of shape
(C, d+1), bias in the last column) and cross-entropy, one poison z = (x, y) has gradient
G(z) = (p(x) − e_y) x̃ᵀ. Reachability at fraction ε asks for a poison distribution ν with
g(ν) = −g(μ)/ε (eq. 3.5 with (1−ρ)/ρ = 1/ε). For any direction V,

    ⟨V, G(z)⟩ = E_{p(x)}[u] − u_y ≤ max_k u_k − min_l u_l,     u_k = ⟨V_k, x̃⟩,

so ⟨V, g(ν)⟩ ≤ σ̄(V) := max_{k,l} sup_{x ∈ box} ⟨V_k − V_l, x̃⟩ (closed form: a linear function on a
box, sup_{x ∈ box} ⟨a, x⟩ = Σ_i max(a_i·lo_i, a_i·hi_i), attained at a corner), and taking V = −g(μ):

    ε ≥ τ_box = ‖g(μ)‖² / σ̄(−g(μ)).

Like τ it needs no training and no poison: only the clean mean gradient at the target. It is a
necessary condition (the bound on ⟨V, G(z)⟩ is not tight in general), complementary to eq. 3.6,
which constrains the direction W itself and ignores the box.

τ_box uses the one direction V = −g(μ). The best direction gives the *gauge* (:func:`linear_box_gauge`):
every poison gradient lies in conv(S ∪ {0}) with S = {(e_k − e_l) x̃ᵀ : k ≠ l, x ∈ box}, because
p − e_y = Σ_{k≠y} p_k (e_k − e_y) with Σ_{k≠y} p_k ≤ 1, so reachability needs

    ε ≥ τ_gauge = min { t : −g(μ) ∈ t·conv(S ∪ {0}) } = max_V ⟨−g(μ), V⟩ / σ̄(V)  ≥ τ_box.

Writing −g(μ) = Σ_{k≠l} (e_k − e_l) m_klᵀ with m_kl = Σ λ x̃ a non-negative mix of box points, i.e.
m_kl = [u_kl; c_kl] with lo_i·c_kl ≤ u_kl,i ≤ hi_i·c_kl (no constraint on an infinite side), τ_gauge
is the linear programme min Σ c_kl. Its solution is a *plan*: c_kl is the poison mass (in ε units) that the target must
classify as k while it is labelled l — a label mix an attack can start from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: a box limit: one number for every feature, or one per feature of the flattened input
Limits = float | torch.Tensor | np.ndarray


def _limits(lo, hi, d: int) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
    """``lo`` / ``hi`` as two floats (scalar box) or two float64 tensors of shape (d,) (per feature).
    Raises ValueError for NaN, a wrong length or lo > hi somewhere."""
    def one(v, what):
        t = torch.as_tensor(np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64), device="cpu")
        if torch.isnan(t).any():
            raise ValueError(f"{what} contains NaN")
        if t.ndim == 0:
            return t
        t = t.reshape(-1)
        if t.numel() == 1:
            return t[0]
        if t.numel() != d:
            raise ValueError(f"{what} has {t.numel()} entries for {d} features (give a scalar or one per feature)")
        return t

    lo_t, hi_t = one(lo, "lo"), one(hi, "hi")
    if bool((lo_t > hi_t).any()):
        raise ValueError(f"need lo <= hi, got [{lo}, {hi}]" if lo_t.ndim == hi_t.ndim == 0 else "need lo <= hi in every feature")
    if lo_t.ndim == 0 and hi_t.ndim == 0:
        return float(lo_t), float(hi_t)
    return lo_t.expand(d).clone(), hi_t.expand(d).clone()


def _box_sup(A: torch.Tensor, lo, hi) -> torch.Tensor:
    """sup over the box of ⟨a, x⟩ for every row a of A (..., d): Σ_i max(a_i·lo_i, a_i·hi_i)."""
    finite = (math.isfinite(lo) and math.isfinite(hi)) if isinstance(lo, float) else bool(
        torch.isfinite(lo).all() and torch.isfinite(hi).all())
    if finite:
        return torch.maximum(A * lo, A * hi).sum(-1)
    # a zero coefficient on an infinite side contributes 0, not 0·inf = nan
    lo_t = torch.as_tensor(lo, dtype=A.dtype, device=A.device)
    hi_t = torch.as_tensor(hi, dtype=A.dtype, device=A.device)
    zero = torch.zeros((), dtype=A.dtype, device=A.device)
    return torch.where(A > 0, A * hi_t, torch.where(A < 0, A * lo_t, zero)).sum(-1)


def box_support_bound(V: torch.Tensor, lo: Limits = 0.0, hi: Limits = 1.0) -> float:
    """σ̄(V) = max_{k,l} sup_{x ∈ box} ⟨V_k − V_l, [x; 1]⟩ for V of shape (C, d+1) (bias last).

    The box is [lo, hi] per feature of the flattened input: ``lo`` / ``hi`` scalars or (d,) arrays
    (entries may be ±inf; σ̄ is then inf where V leans on an unbounded side).
    An upper bound of sup over box inputs x and labels y of ⟨V, (softmax(Wx̃) − e_y) x̃ᵀ⟩, for every W.
    """
    if V.ndim != 2 or V.shape[0] < 2 or V.shape[1] < 2:
        raise ValueError(f"need V of shape (C >= 2, d + 1 >= 2), got {tuple(V.shape)}")
    lo, hi = _limits(lo, hi, V.shape[1] - 1)
    V = V.detach().double().cpu()  # the box limits are CPU float64 (_limits)
    D = V[:, None, :] - V[None, :, :]  # (C, C, d+1): V_k − V_l
    lin = _box_sup(D[..., :-1], lo, hi) + D[..., -1]
    return float(lin.max())


def linear_box_threshold(grad_mean: torch.Tensor, lo: Limits = 0.0, hi: Limits = 1.0) -> float:
    """τ_box = ‖g(μ)‖² / σ̄(−g(μ)) in ε-units (reachable needs ε ≥ τ_box); 0 when g(μ) = 0 (and
    when σ̄ is infinite: an unbounded feature the direction leans on bounds nothing).

    ``grad_mean`` (C, d+1): the mean cross-entropy gradient over the clean data at the target, with
    respect to [W | b] (weights of the C classes, bias in the last column). ``lo`` / ``hi``: the box
    of the flattened inputs, scalars or one value per feature (see :func:`box_support_bound`).
    """
    g = grad_mean.detach().double().cpu()
    g = g - g.mean(0, keepdim=True)  # a cross-entropy gradient's columns sum to 0 over the classes
    sq = float((g * g).sum())
    if sq == 0.0:
        return 0.0
    sigma = box_support_bound(-g, lo, hi)
    if math.isinf(sigma):
        return 0.0
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


def linear_box_gauge(grad_mean: torch.Tensor, lo: Limits = 0.0, hi: Limits = 1.0) -> BoxGauge:
    """τ_gauge ≥ τ_box: the exact threshold of the relaxation above, by a sparse linear programme
    (HiGHS). ``grad_mean`` (C, d+1) as for :func:`linear_box_threshold`; ``lo`` / ``hi`` the box,
    scalars or one value per feature (±inf: that side unconstrained). Its columns are centred over
    the classes first (a cross-entropy gradient's are, up to rounding). ``tau`` is inf when no poison
    mix can cancel g (a degenerate box, lo == hi). Cost: C(C−1)·(d+1) variables; seconds for MNIST LR
    gradients, but up to about a minute for unstructured (random) ones of that size."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack

    g = grad_mean.detach().double().cpu().numpy()
    if g.ndim != 2 or g.shape[0] < 2 or g.shape[1] < 2:
        raise ValueError(f"need grad_mean of shape (C >= 2, d + 1 >= 2), got {tuple(g.shape)}")
    C, d1 = g.shape
    d = d1 - 1
    lo, hi = _limits(lo, hi, d)
    lo_v = np.full(d, lo) if isinstance(lo, float) else lo.cpu().numpy()
    hi_v = np.full(d, hi) if isinstance(hi, float) else hi.cpu().numpy()
    g = g - g.mean(0, keepdims=True)
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
    # u - hi_i*c <= 0 and lo_i*c - u <= 0, one row per (pair, pixel) with a finite limit on that side
    c_all = n_u + np.repeat(np.arange(P), d)
    hi_all, lo_all = np.tile(hi_v, P), np.tile(lo_v, P)

    def block(sign: float, limit: np.ndarray) -> coo_matrix:
        keep = np.flatnonzero(np.isfinite(limit))
        r = np.arange(len(keep))
        return coo_matrix((np.concatenate([np.full(len(keep), sign), -sign * limit[keep]]),
                           (np.concatenate([r, r]), np.concatenate([keep, c_all[keep]]))), shape=(len(keep), n_var))

    nonneg = bool((lo_v == 0.0).all())  # u >= 0 as variable bounds: the lower rows are not needed
    blocks = [block(1.0, hi_all)]
    if not nonneg:
        blocks.append(block(-1.0, lo_all))
    A_ub = vstack(blocks).tocsr()
    bounds = [(0.0, None) if nonneg else (None, None)] * n_u + [(0.0, None)] * P
    cost = np.concatenate([np.zeros(n_u), np.ones(P)])
    if A_ub.shape[0]:
        res = linprog(cost, A_ub=A_ub, b_ub=np.zeros(A_ub.shape[0]), A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    else:  # no finite limit anywhere
        res = linprog(cost, A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
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
