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
"""

from __future__ import annotations

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
    sq = float((g * g).sum())
    if sq == 0.0:
        return 0.0
    sigma = box_support_bound(-g, lo, hi)
    return sq / sigma if sigma > 0 else float("inf")


__all__ = ["box_support_bound", "linear_box_threshold"]
