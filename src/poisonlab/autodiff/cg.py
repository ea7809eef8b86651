"""Conjugate gradient for (H + λI) x = b with a matrix-free ``matvec`` (Hestenes & Stiefel 1952).

``normal_equations=True`` solves (H + λI)ᵀ(H + λI) x = (H + λI)ᵀ b instead (CGNE/CGLS-style), which
converges for indefinite or non-symmetric H at the price of two products per iteration — the
variant used for the total gradient when the follower's Hessian is not positive definite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..validation import check_bool, check_int, check_number

MatVec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class CGOptions:
    """The options of one conjugate-gradient solve of (A + λI) x = b: the solver group taken by
    :func:`conjugate_gradient`, :func:`~poisonlab.autodiff.inverse_hvp` and
    :func:`~poisonlab.autodiff.total_gradient`.

    Attributes:
        damping: λ >= 0 added to the operator's diagonal, A + λI. Default 0.0.
        tol: Relative residual at which CG stops, ‖r‖ ≤ tol·‖b‖ (a number > 0). Default 1e-6.
        max_iter: Most CG iterations (an integer >= 1). Default 100.
        normal_equations: Solve Mᵀ M x = Mᵀ b, M = A + λI, instead (indefinite or non-symmetric A,
            two products per iteration). Default false.
    """

    damping: float = 0.0
    tol: float = 1e-6
    max_iter: int = 100
    normal_equations: bool = False

    def __post_init__(self) -> None:
        what = "CG options"
        check_number(self.damping, "damping", what, allow_zero=True)
        check_number(self.tol, "tol", what)
        check_int(self.max_iter, "max_iter", what)
        check_bool(self.normal_equations, "normal_equations", what)


#: the default options (λ = 0, tol 1e-6, 100 iterations, plain CG)
DEFAULT_CG = CGOptions()


@dataclass(frozen=True)
class CGResult:
    x: torch.Tensor
    iterations: int
    residual_norm: float  # ‖b − A x‖ of the system actually solved
    converged: bool


def conjugate_gradient(
    matvec: MatVec,
    b: torch.Tensor,
    solver: CGOptions = DEFAULT_CG,
    *,
    x0: torch.Tensor | None = None,
    rmatvec: MatVec | None = None,
) -> CGResult:
    """Solve (A + λI) x = b for symmetric A given as ``matvec`` (1-D tensors), λ = ``solver.damping``.

    Stops when ‖r‖ ≤ ``solver.tol``·‖b‖ or after ``solver.max_iter`` iterations. ``x0`` warm-starts
    the solve. With ``solver.normal_equations`` the system Mᵀ M x = Mᵀ b, M = A + λI, is solved;
    ``rmatvec`` computes Aᵀ·v (defaults to ``matvec``, i.e. symmetric A).
    """
    damping, tol, max_iter = solver.damping, solver.tol, solver.max_iter

    def m(v: torch.Tensor) -> torch.Tensor:
        out = matvec(v)
        return out + damping * v if damping else out

    if solver.normal_equations:
        mt = (lambda v: rmatvec(v) + damping * v) if rmatvec is not None else m  # noqa: E731
        op: MatVec = lambda v: mt(m(v))  # noqa: E731
        rhs = mt(b)
    else:
        op, rhs = m, b

    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - op(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = torch.dot(r, r)
    bnorm = torch.linalg.vector_norm(rhs).item()
    threshold = tol * max(bnorm, 1e-30)
    it = 0
    if bnorm == 0.0:
        return CGResult(torch.zeros_like(rhs), 0, 0.0, True)
    while it < max_iter and rs.sqrt().item() > threshold:
        ap = op(p)
        pap = torch.dot(p, ap)
        if pap.item() <= 0:  # direction of non-positive curvature: stop (A not PD on this Krylov space)
            break
        alpha = rs / pap
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = torch.dot(r, r)
        p = r + (rs_new / rs) * p
        rs = rs_new
        it += 1
    res = rs.sqrt().item()
    return CGResult(x, it, res, res <= threshold)
