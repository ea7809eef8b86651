"""Implicit (total) gradients of bilevel problems.

For a follower at a stationary point ∇_w f(w, θ) = 0 and a leader loss ℓ(w), the implicit
function theorem gives dw/dθ = −(∇²_ww f)⁻¹ ∇²_wθ f, hence the *total gradient* of ℓ w.r.t. θ

    D_θ ℓ = ∇_θ ℓ − ∇²_θw f · (∇²_ww f)⁻¹ · ∇_w ℓ

(thesis eq. 2.3; Evtushenko 1974; Fiez et al. 2020). The inverse-Hessian product comes from CG with
HVPs; influence functions (Koh & Liang 2017) use the same ``inverse_hvp``. Functions follow the
convention of :mod:`poisonlab.autodiff.params`: ``f(params, *args)``; here the follower is
``f(w, *theta)`` and the leader ``ℓ(w, *theta)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .cg import DEFAULT_CG, CGOptions, CGResult, conjugate_gradient, safeguarded_cg
from .hvp import GradientGraph, dataset_hvp, mixed_vjp
from .params import Functional, Params, flatten, unflatten


@dataclass(frozen=True)
class InverseHVP:
    """The solve's value (shaped like the parameters) and the CG record."""

    value: Params
    cg: CGResult


def inverse_hvp(
    f: Functional,
    params: Sequence[torch.Tensor],
    b: Sequence[torch.Tensor],
    *args: torch.Tensor,
    solver: CGOptions = DEFAULT_CG,
    x0: Sequence[torch.Tensor] | None = None,
    method: str = "fwdrev",
    chunk_size: int | None = None,
    hvp_fn: Callable[[Params], Params] | None = None,
) -> InverseHVP:
    """(∇²_w f(w, *args) + λI)⁻¹ b by CG at w = ``params`` (λ = ``solver.damping``).

    ``solver`` holds the CG options (:class:`~poisonlab.autodiff.CGOptions`: damping, tolerance,
    iterations, normal equations for indefinite Hessians). The products are
    :func:`~poisonlab.autodiff.dataset_hvp` ``(f, params, v, *args, chunk_size=chunk_size,
    method=method)`` (``f`` the mean loss of its batch); ``hvp_fn(v)`` replaces them with any other
    symmetric operator. ``x0`` warm-starts CG. With ``solver.fallback`` the solve is
    :func:`~poisonlab.autodiff.cg.safeguarded_cg` (negative curvature, non-finite or growing residuals
    fall back to the normal equations, then to larger damping; ``cg.solver`` says what was solved).
    """
    params = tuple(params)
    prod = hvp_fn or (lambda v: dataset_hvp(f, params, v, *args, chunk_size=chunk_size, method=method))

    def matvec(vec: torch.Tensor) -> torch.Tensor:
        return flatten(prod(unflatten(vec, params)))

    solve = safeguarded_cg if solver.fallback else conjugate_gradient
    res = solve(matvec, flatten(b), solver, x0=flatten(x0) if x0 is not None else None)
    return InverseHVP(unflatten(res.x, params), res)


def total_gradient(
    follower: Functional,
    leader: Functional,
    w: Sequence[torch.Tensor],
    theta: Sequence[torch.Tensor],
    *,
    solver: CGOptions = DEFAULT_CG,
    x0: Sequence[torch.Tensor] | None = None,
    method: str = "fwdrev",
) -> tuple[Params, InverseHVP]:
    """D_θ ℓ = ∇_θ ℓ − ∇²_θw f (∇²_ww f + λI)⁻¹ ∇_w ℓ for the follower ``f(w, *theta)`` and the
    leader ``ℓ(w, *theta)`` (both scalar), at the follower's ``w`` and the leader's ``theta``;
    λ = ``solver.damping``, the solve's options in ``solver`` (:class:`~poisonlab.autodiff.CGOptions`).

    Returns (D_θ ℓ, one tensor per entry of ``theta``; the inverse-HVP solve); pass the previous
    solve's value as ``x0`` to warm-start. ``method`` selects the Hessian-vector product of
    :func:`~poisonlab.autodiff.hvp` (``"double_backward"`` has less per-call overhead on small models,
    and builds ∇_w f once for every product of the solve and the mixed product:
    :class:`~poisonlab.autodiff.hvp.GradientGraph`). ``solver.fallback`` as in :func:`inverse_hvp`.
    """
    w = tuple(p.detach() for p in w)
    theta = tuple(t.detach().requires_grad_(True) for t in theta)
    wg = tuple(p.clone().requires_grad_(True) for p in w)
    with torch.enable_grad():
        lw = leader(wg, *theta)
        grads = torch.autograd.grad(lw, wg + theta, allow_unused=True)
    gw = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(w, grads[: len(w)]))
    gtheta = tuple(torch.zeros_like(t) if g is None else g for t, g in zip(theta, grads[len(w) :]))
    nums = tuple(range(len(theta)))
    if method == "double_backward":  # one graph of ∇_w f for the k products of the solve and the mixed one
        graph = GradientGraph(follower, w, *theta, argnums=nums)
        solve = inverse_hvp(follower, w, gw, solver=solver, x0=x0, hvp_fn=graph.hvp)
        cross = graph.mixed(solve.value)
        del graph
    else:
        theta_fixed = tuple(t.detach() for t in theta)
        solve = inverse_hvp(follower, w, gw, *theta_fixed, solver=solver, x0=x0, method=method)
        cross = mixed_vjp(follower, w, solve.value, *theta, argnums=nums)
    return tuple(a - c for a, c in zip(gtheta, cross)), solve
