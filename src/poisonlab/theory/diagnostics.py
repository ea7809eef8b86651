"""Budget conversions and the gradient-norm diagnostic (thesis Figure 3.1, right).

ε (``fraction``) is the number of poisons relative to the clean set; ρ = ε/(1+ε) their share
of the mixed set D_tr ∪ D_p.
"""

from __future__ import annotations

import math

import torch


def rho_of_eps(eps: float) -> float:
    """ρ = ε/(1+ε) (∞ ↦ 1)."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return 1.0 if math.isinf(eps) else eps / (1.0 + eps)


def eps_of_rho(rho: float) -> float:
    """ε = ρ/(1−ρ) (ρ = 1 ↦ ∞)."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    return math.inf if rho == 1.0 else rho / (1.0 - rho)


def min_poison_count(tau: float, n_clean: int, attained: bool = True) -> float:
    """The fewest poisons k with k/n ≥ τ (k/n > τ when the bound is not ``attained``); ∞ if τ = ∞.

    This is the count the theory allows; the protocol's budget rule
    (:func:`poisonlab.data.poison_count`) rounds fraction·n, so pass a fraction ≥ k/n.
    """
    if math.isinf(tau):
        return math.inf
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    k = tau * n_clean
    kc = math.ceil(k - 1e-9 * max(1.0, k))  # ignore round-off just above an integer
    return int(kc if attained else math.floor(k + 1e-9 * max(1.0, k)) + 1)


def mixed_gradient_norm(g_clean: torch.Tensor, g_poison: torch.Tensor | None, eps: float) -> float:
    """‖(1−ρ)·g(μ) + ρ·g(ν)‖₂, the gradient norm of the target over the mixed distribution.

    ``g_clean`` = mean gradient over the clean set, ``g_poison`` = mean gradient over the
    poisons (flattened, same shape; ``None`` or ε = 0 means no poisons). Zero iff the target is a
    stationary point of retraining on D_tr ∪ D_p (Definition 1).
    """
    rho = rho_of_eps(eps)
    if g_poison is None or rho == 0.0:
        return float(torch.linalg.vector_norm(g_clean))
    if g_poison.shape != g_clean.shape:
        raise ValueError(f"gradient shapes differ: {tuple(g_clean.shape)} vs {tuple(g_poison.shape)}")
    return float(torch.linalg.vector_norm((1.0 - rho) * g_clean + rho * g_poison))
