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


#: the most classes for which :func:`linear_box_gauge` enumerates the class subsets (2^C − 2 of them)
MAX_CUT_CLASSES = 12
#: class-subset rows given to one solve of the cut form; beyond it rows are added where violated
CUT_ROWS = 200_000


def linear_box_gauge(grad_mean: torch.Tensor, lo: Limits = 0.0, hi: Limits = 1.0, *,
                     formulation: str = "auto") -> BoxGauge:
    """τ_gauge ≥ τ_box: the exact threshold of the relaxation above, by a linear programme (HiGHS).
    ``grad_mean`` (C, d+1) as for :func:`linear_box_threshold`; ``lo`` / ``hi`` the box, scalars or
    one value per feature (±inf: that side unconstrained). Its columns are centred over the classes
    first (a cross-entropy gradient's are, up to rounding). ``tau`` is inf when no poison mix can
    cancel g (a degenerate box, lo == hi).

    ``formulation``: ``"pairs"`` solves the programme of the module docstring as written, with
    C(C−1)·(d+1) variables; ``"cuts"`` solves the same programme in the C(C−1) pair masses c alone
    (:func:`_cut_gauge`: a few hundred times smaller, one row per class subset); ``"auto"`` (default)
    takes the cut form up to :data:`MAX_CUT_CLASSES` classes. Both give the same ``tau`` and an
    optimal ``direction``; at a degenerate optimum the plan and direction may be different optima."""
    if formulation not in ("auto", "cuts", "pairs"):
        raise ValueError(f"formulation must be 'auto', 'cuts' or 'pairs', got {formulation!r}")
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
    cuts = formulation == "cuts" or (formulation == "auto" and C <= MAX_CUT_CLASSES)
    solved = (_cut_gauge if cuts else _pair_gauge)(g, lo_v, hi_v)
    if solved is None:  # infeasible: only a degenerate box (lo == hi) cannot span the pixel rows
        return BoxGauge(float("inf"), np.full((C, C), np.nan), np.full((C, d1), np.nan))
    tau, mass, V = solved
    plan = np.zeros((C, C))
    plan[~np.eye(C, dtype=bool)] = mass * scale  # pair order: (k, l) for k, then l != k
    return BoxGauge(tau * scale, plan, V - V.mean(0, keepdims=True))


def _pairs(C: int) -> tuple[np.ndarray, np.ndarray]:
    """The ordered class pairs (k, l), k != l, k-major: the classified and the given label."""
    k, l = np.nonzero(~np.eye(C, dtype=bool))
    return k, l


def _solved(res, what: str) -> bool:
    """True when scipy's HiGHS solve ``res`` is optimal, False when infeasible; raises otherwise."""
    if res.status == 2:
        return False
    if res.status != 0:
        raise RuntimeError(f"linear_box_gauge ({what}): the LP did not solve ({res.message})")
    return True


def _pair_gauge(g: np.ndarray, lo_v: np.ndarray, hi_v: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The programme as written, at unit scale: variables u[p, i] (pixel mass of pair p) and c[p];
    (tau, c, V) with V the equality rows' marginals (∂tau/∂b_eq, b_eq = −g), None if infeasible."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, vstack

    C, d1 = g.shape
    d = d1 - 1
    ks, ls = _pairs(C)
    P = len(ks)
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
    if not _solved(res, "pairs"):
        return None
    # ∂tau/∂b_eq = the equality marginals; b_eq = −g, so V = marginals
    return float(res.fun), res.x[n_u:], np.asarray(res.eqlin.marginals, dtype=np.float64).reshape(C, d1)


def _cut_gauge(g: np.ndarray, lo_v: np.ndarray, hi_v: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The same programme in the pair masses c alone, at unit scale: (tau, c, V) or None if infeasible.

    For fixed c, pixel i asks for a flow u[·, i] on the class digraph (arc p = k → l, bounds
    lo_i·c_p ≤ u ≤ hi_i·c_p) whose net outflow at class m is −g[m, i]. By Hoffman's circulation
    theorem it exists iff every class subset S (∅ ≠ S ≠ all) has

        hi_i·c(S → S̄) − lo_i·c(S̄ → S) ≥ s[S, i] := −Σ_{m ∈ S} g[m, i]

    (a pixel with an infinite limit constrains nothing: the digraph is complete). Pixels sharing
    (lo_i, hi_i) need only their largest s, so the programme is min Σ c over these rows, c ≥ 0, and
    the bias rows Bc = −g[:, d] (B the arcs' incidence). Rows are added where violated beyond
    :data:`CUT_ROWS` (per-feature boxes with many distinct limits). Its duals give V: row (S, group)
    with dual y adds y to V[m, i*] for m ∈ S (i* the pixel of the largest s), the bias rows' duals
    are V[:, d]; V reaches ⟨−g, V⟩ = tau and σ̄(V) ≤ 1 (the dual of the programme), so it is optimal.
    """
    from scipy.optimize import linprog

    C, d1 = g.shape
    d = d1 - 1
    ks, ls = _pairs(C)
    P = len(ks)
    masks = np.arange(1, 2 ** C - 1)
    member = ((masks[:, None] >> np.arange(C)) & 1).astype(bool)  # (S, C)
    out = (member[:, ks] & ~member[:, ls]).astype(np.float64)  # (S, P): arc p leaves S
    into = (~member[:, ks] & member[:, ls]).astype(np.float64)  # arc p enters S
    incidence = np.zeros((C, P))
    incidence[ks, np.arange(P)] = 1.0
    incidence[ls, np.arange(P)] = -1.0
    bias = -g[:, d]
    finite = np.flatnonzero(np.isfinite(lo_v) & np.isfinite(hi_v))
    V = np.zeros((C, d1))
    if finite.size:
        limits, group = np.unique(np.stack([lo_v[finite], hi_v[finite]], 1), axis=0, return_inverse=True)
        group = group.reshape(-1)
        s = -member.astype(np.float64) @ g[:, finite]  # (S, finite pixels)
        n_s, n_g = len(masks), len(limits)
        need = np.full((n_s, n_g), -np.inf)  # the largest s per subset and limit group, and its pixel
        argmax = np.zeros((n_s, n_g), dtype=np.int64)
        for j in range(n_g):
            cols = np.flatnonzero(group == j)
            best = s[:, cols].argmax(1)
            need[:, j] = s[np.arange(n_s), cols[best]]
            argmax[:, j] = finite[cols[best]]
        lo_g, hi_g = limits[:, 0], limits[:, 1]
        # a row is void when c >= 0 meets it anyway: nothing asked and no arc with a negative coefficient
        live = ~((need <= 0) & (hi_g >= 0) & (lo_g <= 0))
        cand = np.argwhere(live)  # (rows, 2): subset, group
        if len(cand) > CUT_ROWS:
            order = np.argsort(-need[cand[:, 0], cand[:, 1]], kind="stable")
            active = cand[order[:CUT_ROWS]]
        else:
            active = cand
    else:
        active = np.zeros((0, 2), dtype=np.int64)
    while True:
        if len(active):
            sub, grp = active[:, 0], active[:, 1]
            coef = hi_g[grp, None] * out[sub] - lo_g[grp, None] * into[sub]
            res = linprog(np.ones(P), A_ub=-coef, b_ub=-need[sub, grp], A_eq=incidence, b_eq=bias,
                          bounds=(0.0, None), method="highs")
        else:
            res = linprog(np.ones(P), A_eq=incidence, b_eq=bias, bounds=(0.0, None), method="highs")
        if not _solved(res, "cuts"):
            return None
        if not finite.size or len(active) == len(cand):
            break
        c = res.x
        slack = hi_g[None, :] * (out @ c)[:, None] - lo_g[None, :] * (into @ c)[:, None] - need
        seen = np.zeros_like(live)
        seen[active[:, 0], active[:, 1]] = True
        viol = np.argwhere(live & ~seen & (slack < -1e-9))
        if not len(viol):
            break
        worst = np.argsort(slack[viol[:, 0], viol[:, 1]], kind="stable")[:CUT_ROWS]
        active = np.concatenate([active, viol[worst]])
    if len(active):
        y = -np.asarray(res.ineqlin.marginals, dtype=np.float64)  # ∂tau/∂need >= 0
        sub, grp = active[:, 0], active[:, 1]
        np.add.at(V.T, argmax[sub, grp], member[sub] * y[:, None])  # V[m, i*] += y for m in S
    V[:, d] = np.asarray(res.eqlin.marginals, dtype=np.float64)  # ∂tau/∂b_eq, b_eq = −g[:, d]
    return float(res.fun), res.x, V


__all__ = ["BoxGauge", "box_support_bound", "linear_box_gauge", "linear_box_threshold"]
