"""Multiclass cross-entropy (Example 3) and neural networks (Theorem 4): necessary conditions.

Paper: Lu, Kamath & Yu, ICML 2023 (thesis §3.4.3). For h = Wᵀx (bias absorbed: x̃ = [x; 1]) and
cross-entropy l(h, y) = −⟨h, y⟩ + log Σ_k exp h_k, taking the trace of the reachability condition
(eq. 3.5) gives the scalar condition 0 = (1−ρ)·g(μ) + ρ·g(ν) with

    g(μ) = ⟨W, G(μ)⟩ = E_μ ⟨h, p − y⟩,  p = softmax(h),

and −W((c−1)/e) ≤ g(ν) < ∞ (tight; W = Lambert W, c classes), hence the necessary condition

    ε ≥ τ(c) = max{⟨W, G(μ)⟩ / W((c−1)/e), 0}                                      (eq. 3.6)

For c = 2 it is eq. 3.4. For a network h = Wᵀφ(x, u) (Theorem 4) the same holds on the last layer
with the features φ in place of x, so every function here takes the *logits* h (N, C) of the target
model on the clean data and the labels y (N,): it covers LR, MLPs and CNNs alike. Eq. 3.11
generalises the inner product to ⟨A ∇_h l, h⟩ for any C×C matrix A (:func:`univariate_check`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize

from .lambert import lambert_w
from .margin import Reachability, reachability_from_extremes


def ce_lower_bound(num_classes: int) -> float:
    """inf over (h, y) of ⟨h, softmax(h) − y⟩ = −W((c−1)/e), attained at h = (1 + W((c−1)/e))·e_y."""
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    return -lambert_w((num_classes - 1) / math.e)


def _check(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ValueError(f"need logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("need at least one clean point")
    return logits.detach().double(), labels.detach().long()


def trace_statistic(logits: torch.Tensor, labels: torch.Tensor, A: torch.Tensor | None = None) -> float:
    """E ⟨A (p − y), h⟩ over the clean set (A = I: ⟨W, G(μ)⟩ of eq. 3.6; general A: g_A of eq. 3.11)."""
    h, y = _check(logits, labels)
    r = torch.softmax(h, 1)
    r[torch.arange(len(y), device=r.device), y.to(r.device)] -= 1.0
    if A is not None:
        r = r @ A.double().T
    return float((r * h).sum(1).mean())


def multiclass_reachability(logits: torch.Tensor, labels: torch.Tensor) -> Reachability:
    """eq. 3.6: τ(c) = max{E⟨h, p − y⟩ / W((c−1)/e), 0} from the target's clean logits (N, C).

    A necessary condition only (``exact=False``): no ε below τ can make the target stationary on
    D_tr ∪ D_p, whatever the poisons (any inputs, any labels).
    """
    h, y = _check(logits, labels)
    a = ce_lower_bound(h.shape[1])
    return reachability_from_extremes(trace_statistic(h, y), a, math.inf, True, False, exact=False)


def _phi_A(h: np.ndarray, y: int, A: np.ndarray) -> float:
    e = np.exp(h - h.max())
    p = e / e.sum()
    p[y] -= 1.0
    return float(h @ (A @ p))


def _extreme_A(A: np.ndarray, sign: float, radius: float, restarts: int, seed: int) -> float:
    """sign·min over ‖h‖∞ ≤ radius, y of sign·⟨A(p − e_y), h⟩ (multi-start L-BFGS-B)."""
    c = A.shape[0]
    rng = np.random.default_rng(seed)
    best = math.inf
    for y in range(c):
        for k in range(restarts):
            h0 = rng.normal(scale=[0.5, 2.0, 5.0][k % 3], size=c)
            res = minimize(lambda h, y=y: sign * _phi_A(h, y, A), h0, method="L-BFGS-B", bounds=[(-radius, radius)] * c)
            best = min(best, float(res.fun))
    return sign * best


def univariate_check(
    logits: torch.Tensor, labels: torch.Tensor, A: torch.Tensor | None = None, *, restarts: int = 6, seed: int = 0
) -> Reachability:
    """eq. 3.11: the necessary condition from ⟨A ∇_h l, h⟩ for a C×C matrix A (default I).

    For A = I the bound is closed-form (eq. 3.6). For other A, inf/sup of ⟨A(p − y), h⟩ over
    (h, y) are found numerically (multi-start L-BFGS-B in a box, declared infinite when doubling the
    box lowers/raises them); if Aᵀ1 is not parallel to 1, shifting h by α·1 makes both infinite and
    the condition is vacuous (τ = 0).
    """
    h, y = _check(logits, labels)
    c = h.shape[1]
    if A is None:
        return multiclass_reachability(h, y)
    A_np = A.detach().double().cpu().numpy()
    if A_np.shape != (c, c):
        raise ValueError(f"A must be {c}x{c}, got {A_np.shape}")
    inner = trace_statistic(h, y, A)
    col = A_np.T @ np.ones(c)
    if float(np.linalg.norm(col - col.mean())) > 1e-12 * max(1.0, float(np.linalg.norm(col))):
        return reachability_from_extremes(inner, -math.inf, math.inf, False, False, exact=False)
    bounds: list[float] = []
    for sign in (1.0, -1.0):
        v1 = _extreme_A(A_np, sign, 30.0, restarts, seed)
        v2 = _extreme_A(A_np, sign, 60.0, restarts, seed)
        grows = sign * (v1 - v2) > 1e-6 * max(1.0, abs(v1))
        closer = min(v1, v2) if sign > 0 else max(v1, v2)
        bounds.append(sign * -math.inf if grows else closer)
    a, b = bounds
    return reachability_from_extremes(inner, a, b, not math.isinf(a), not math.isinf(b), exact=False)
