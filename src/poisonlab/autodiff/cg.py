"""Conjugate gradient for (H + λI) x = b with a matrix-free ``matvec`` (Hestenes & Stiefel 1952).

``normal_equations=True`` solves (H + λI)ᵀ(H + λI) x = (H + λI)ᵀ b instead (CGNE/CGLS-style), which
converges for indefinite or non-symmetric H at the price of two products per iteration — the
variant used for the total gradient when the follower's Hessian is not positive definite.

The iteration never reads a value back to the host inside its loop: the stopping tests (residual
below tolerance, a direction of non-positive or non-finite curvature pᵀMp) are tensors that mask the
update (``torch.where``), and the loop asks the device whether any work is left only every
``check_every`` iterations. While a solve is running the arithmetic is that of the textbook
iteration, so its result equals the per-iteration-checked one; the price is at most
``check_every − 1`` products computed after the solve has stopped.

:func:`safeguarded_cg` wraps the solve with fallbacks for operators that are not positive definite
(neural networks): a solve that meets negative curvature, leaves the finite range or ends far above
its starting residual is redone on the normal equations, then with larger damping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
        check_every: Iterations between the host reads that end a finished solve early (an integer
            >= 1); in between, the stopping tests are tensors on the device. Default 5.
        fallback: Where a solve is asked for (:func:`~poisonlab.autodiff.inverse_hvp`,
            :func:`~poisonlab.autodiff.total_gradient`), solve by :func:`safeguarded_cg`: a solve that
            meets negative curvature, leaves the finite range or ends with a growing residual is redone
            on the normal equations, then with larger damping. :func:`conjugate_gradient` itself
            ignores it. Default false.
    """

    damping: float = 0.0
    tol: float = 1e-6
    max_iter: int = 100
    normal_equations: bool = False
    check_every: int = 5
    fallback: bool = False

    def __post_init__(self) -> None:
        what = "CG options"
        check_number(self.damping, "damping", what, allow_zero=True)
        check_number(self.tol, "tol", what)
        check_int(self.max_iter, "max_iter", what)
        check_bool(self.normal_equations, "normal_equations", what)
        check_int(self.check_every, "check_every", what)
        check_bool(self.fallback, "fallback", what)


#: the default options (λ = 0, tol 1e-6, 100 iterations, plain CG)
DEFAULT_CG = CGOptions()


@dataclass(frozen=True)
class CGResult:
    """One solve: the solution, the iterations taken, ‖b − M x‖ of the system solved, whether it
    reached the tolerance; ``negative_curvature``: a direction with pᵀMp <= 0 (or non-finite)
    stopped it; ``finite``: x is finite; ``initial_residual``: ‖b − M x₀‖. From
    :func:`safeguarded_cg` also the options that produced x and the fallbacks taken to get there."""

    x: torch.Tensor
    iterations: int
    residual_norm: float  # ‖b − A x‖ of the system actually solved
    converged: bool
    negative_curvature: bool = False
    finite: bool = True
    initial_residual: float = 0.0
    solver: CGOptions | None = None
    fallbacks: tuple[str, ...] = ()


def conjugate_gradient(
    matvec: MatVec,
    b: torch.Tensor,
    solver: CGOptions = DEFAULT_CG,
    *,
    x0: torch.Tensor | None = None,
    rmatvec: MatVec | None = None,
) -> CGResult:
    """Solve (A + λI) x = b for symmetric A given as ``matvec`` (1-D tensors), λ = ``solver.damping``.

    Stops when ‖r‖ ≤ ``solver.tol``·‖b‖, at a direction of non-positive curvature (A not positive
    definite on the Krylov space: ``negative_curvature``), or after ``solver.max_iter`` iterations.
    ``x0`` warm-starts the solve. With ``solver.normal_equations`` the system Mᵀ M x = Mᵀ b,
    M = A + λI, is solved; ``rmatvec`` computes Aᵀ·v (defaults to ``matvec``, i.e. symmetric A).
    Host reads: one every ``solver.check_every`` iterations and one at the end.
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
    r0 = rs.sqrt()
    bnorm = torch.linalg.vector_norm(rhs)
    # compared in float64, as a Python float would be: tol·max(‖b‖, 1e-30)
    threshold = tol * bnorm.double().clamp_min(1e-30)
    zero_b = bnorm == 0
    active = (rs.sqrt().double() > threshold) & ~zero_b
    its = torch.zeros((), dtype=torch.int64, device=rhs.device)
    curvature = torch.zeros((), dtype=torch.bool, device=rhs.device)
    for it in range(max_iter):
        if it % solver.check_every == 0 and not bool(active):  # the loop's only host read
            break
        ap = op(p)
        pap = torch.dot(p, ap)
        bad = active & ~(pap > 0)  # non-positive or non-finite curvature: stop (A not PD on this Krylov space)
        curvature = curvature | bad
        active = active & ~bad
        alpha = rs / pap
        x = torch.where(active, x + alpha * p, x)
        r = torch.where(active, r - alpha * ap, r)
        rs_new = torch.dot(r, r)
        p = torch.where(active, r + (rs_new / rs) * p, p)
        rs = torch.where(active, rs_new, rs)
        its = its + active.long()
        active = active & (rs.sqrt().double() > threshold)
    x = torch.where(zero_b, torch.zeros_like(x), x)
    res = torch.where(zero_b, torch.zeros_like(rs), rs.sqrt())
    summary = torch.stack([its.double(), res.double(), threshold, curvature.double(),
                           torch.isfinite(x).all().double(), r0.double()]).tolist()  # one host read
    n_its, res_f, thr, curv, fin, r0_f = summary
    return CGResult(x, int(n_its), res_f, res_f <= thr, bool(curv), bool(fin), r0_f)


#: how far above its starting residual (or ‖b‖) a solve may end before :func:`safeguarded_cg` redoes it
RESIDUAL_GROWTH = 10.0


def _acceptable(res: CGResult, bnorm: float) -> bool:
    return (res.finite and not res.negative_curvature and res.residual_norm == res.residual_norm
            and res.residual_norm <= RESIDUAL_GROWTH * max(bnorm, res.initial_residual))


def safeguarded_cg(
    matvec: MatVec,
    b: torch.Tensor,
    solver: CGOptions = DEFAULT_CG,
    *,
    x0: torch.Tensor | None = None,
    rmatvec: MatVec | None = None,
    damping_raises: int = 3,
    damping_factor: float = 10.0,
) -> CGResult:
    """:func:`conjugate_gradient` with fallbacks, for operators that may be indefinite.

    A solve is accepted when x is finite, no direction of non-positive curvature stopped it, and its
    residual ends at most :data:`RESIDUAL_GROWTH` times above max(‖b‖, its starting residual). A
    rejected solve is redone (from ``x0`` again) on the normal equations at the same damping
    (``"normal_equations"``; with half of ``max_iter``, so the same number of products, two per
    iteration), then up to ``damping_raises`` times on the normal equations with the
    damping multiplied by ``damping_factor`` each time (from at least 1e-3; ``"damping=<λ>"``). The
    result carries the options that produced it (``solver``) and the fallbacks taken; when none is
    accepted, the last attempt (check ``finite``). A positive definite system whose first solve is
    accepted costs nothing extra.
    """
    bnorm = float(torch.linalg.vector_norm(b))
    attempts: list[tuple[str | None, CGOptions]] = [(None, solver)]
    # the normal equations take two products per iteration: half the iterations, the same products
    ne = replace(solver, normal_equations=True,
                 max_iter=solver.max_iter if solver.normal_equations else max(1, solver.max_iter // 2))
    if not solver.normal_equations:
        attempts.append(("normal_equations", ne))
    lam = solver.damping
    for _ in range(damping_raises):
        lam = max(lam, 1e-4) * damping_factor
        attempts.append((f"damping={lam:g}", replace(ne, damping=lam)))
    taken: list[str] = []
    res: CGResult | None = None
    for label, opts in attempts:
        if label is not None:
            taken.append(label)
        start = x0 if x0 is not None and bool(torch.isfinite(x0).all()) else None
        res = conjugate_gradient(matvec, b, opts, x0=start, rmatvec=rmatvec)
        # the normal equations' right-hand side is Mᵀb: judge the residual against its own start
        ref = bnorm if not opts.normal_equations else res.initial_residual
        if _acceptable(res, ref):
            break
    assert res is not None
    return replace(res, solver=opts, fallbacks=tuple(taken))
