"""Implicit (total) gradients of bilevel problems.

For a follower at a stationary point ∇_w f(w, θ) = 0 and a leader loss ℓ(w), the implicit
function theorem gives dw/dθ = −(∇²_ww f)⁻¹ ∇²_wθ f, hence the *total gradient* of ℓ w.r.t. θ

    D_θ ℓ = ∇_θ ℓ − ∇²_θw f · (∇²_ww f)⁻¹ · ∇_w ℓ

(thesis eq. 2.3; Evtushenko 1974; Fiez et al. 2020). The inverse-Hessian product comes from CG with
HVPs; influence functions (Koh & Liang 2017) use the same ``inverse_hvp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .cg import CGResult, conjugate_gradient
from .hvp import hvp, mixed_vjp
from .params import Params, flatten, unflatten


@dataclass(frozen=True)
class InverseHVP:
    value: Params
    cg: CGResult


def inverse_hvp(
    f: Callable[..., torch.Tensor],
    params: Sequence[torch.Tensor],
    b: Sequence[torch.Tensor],
    *,
    damping: float = 0.0,
    tol: float = 1e-6,
    max_iter: int = 100,
    x0: Sequence[torch.Tensor] | None = None,
    normal_equations: bool = False,
    hvp_fn: Callable[[Params], Params] | None = None,
) -> InverseHVP:
    """(∇²f + λI)⁻¹ b by CG; ``hvp_fn`` overrides the product (e.g. a chunked dataset HVP)."""
    params = tuple(params)
    prod = hvp_fn or (lambda v: hvp(f, params, v))

    def matvec(vec: torch.Tensor) -> torch.Tensor:
        return flatten(prod(unflatten(vec, params)))

    res = conjugate_gradient(
        matvec, flatten(b), damping=damping, tol=tol, max_iter=max_iter,
        x0=flatten(x0) if x0 is not None else None, normal_equations=normal_equations,
    )
    return InverseHVP(unflatten(res.x, params), res)


def total_gradient(
    follower_loss: Callable[[Params, Params], torch.Tensor],
    leader_loss: Callable[[Params, Params], torch.Tensor],
    w: Sequence[torch.Tensor],
    theta: Sequence[torch.Tensor],
    *,
    damping: float = 0.0,
    tol: float = 1e-6,
    max_iter: int = 100,
    x0: Sequence[torch.Tensor] | None = None,
    normal_equations: bool = False,
    hvp_method: str = "fwdrev",
) -> tuple[Params, InverseHVP]:
    """D_θ ℓ = ∇_θ ℓ − ∇²_θw f (∇²_ww f + λI)⁻¹ ∇_w ℓ for ``f(w, θ)``, ``ℓ(w, θ)``.

    Returns (D_θ ℓ, the inverse-HVP solve); pass the previous solve's value as ``x0`` to warm-start.
    ``hvp_method`` selects the Hessian-vector product of :func:`hvp` (``"double_backward"`` has
    less per-call overhead on small models).
    """
    w = tuple(p.detach() for p in w)
    theta = tuple(t.detach().requires_grad_(True) for t in theta)
    wg = tuple(p.clone().requires_grad_(True) for p in w)
    with torch.enable_grad():
        lw = leader_loss(wg, theta)
        grads = torch.autograd.grad(lw, wg + theta, allow_unused=True)
    gw = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(w, grads[: len(w)]))
    gtheta = tuple(torch.zeros_like(t) if g is None else g for t, g in zip(theta, grads[len(w) :]))
    theta_fixed = tuple(t.detach() for t in theta)
    f_w = lambda *p: follower_loss(p, theta_fixed)  # noqa: E731
    solve = inverse_hvp(
        f_w, w, gw, damping=damping, tol=tol, max_iter=max_iter,
        x0=x0, normal_equations=normal_equations, hvp_fn=lambda v: hvp(f_w, w, v, hvp_method),
    )
    cross = mixed_vjp(follower_loss, w, theta, solve.value)
    return tuple(a - c for a, c in zip(gtheta, cross)), solve
