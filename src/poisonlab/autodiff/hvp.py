"""Hessian-vector products and mixed second-order products (the one implementation).

Threat-model agnostic calculus used by TGDA (total gradient), back-gradient, Gradient Canceling
(∂/∂z of gradient norms) and influence functions:

* ``hvp(f, params, v)``          = ∇²_w f(w) · v                      (forward-over-reverse, or double backward)
* ``mixed_vjp(g, params, x, v)`` = ∂/∂x ⟨∇_w g(w, x), v⟩ = ∇²_{xw} g · v  (for inputs or attacker parameters x)
* ``dataset_hvp``                = ∇²_w of a mean loss over a large dataset, in chunks (bounded memory)
"""

from __future__ import annotations

from typing import Callable, Sequence, cast

import torch
from torch.func import grad, jvp

from .params import Params

_FALLBACK_WARNED = False


def _no_forward_rule(exc: BaseException) -> bool:
    """True when ``exc`` says an op has no forward-mode (JVP) rule — the one case ``fwdrev`` falls back."""
    if isinstance(exc, NotImplementedError):
        return True
    msg = str(exc).lower()
    return ("forward ad" in msg or "forward-mode" in msg or "forward mode" in msg or "jvp" in msg) and (
        "not implemented" in msg or "not supported" in msg or "does not support" in msg)


def _warn_fallback(exc: BaseException) -> None:
    """Say once per process that forward-over-reverse is unsupported here and double backward is used."""
    global _FALLBACK_WARNED
    if not _FALLBACK_WARNED:
        import warnings

        warnings.warn(f"hvp: forward-over-reverse is not supported by an op of this model ({str(exc).splitlines()[0]}); "
                      "using double backward instead", RuntimeWarning, stacklevel=3)
        _FALLBACK_WARNED = True

def hvp(f: Callable[..., torch.Tensor], params: Sequence[torch.Tensor], v: Sequence[torch.Tensor], method: str = "fwdrev") -> Params:
    """∇²f(params)·v for scalar ``f(*params)``.

    ``method="fwdrev"``: forward-mode over reverse-mode (``torch.func.jvp`` of ``torch.func.grad``),
    one pass, no graph kept. ``method="double_backward"``: ∇_w ⟨∇_w f, v⟩ with ``torch.autograd``
    (works for every op, including those without forward-mode rules).
    """
    params, v = tuple(params), tuple(v)
    if method == "fwdrev":
        argnums = tuple(range(len(params)))
        try:
            _, out = jvp(grad(f, argnums=argnums), params, v)[:2]
            return tuple(out)
        except (RuntimeError, NotImplementedError) as exc:
            if not _no_forward_rule(exc):
                raise  # e.g. CUDA out of memory: never hidden behind a silent fallback
            _warn_fallback(exc)
            method = "double_backward"
    if method == "double_backward":
        ps = tuple(p.detach().requires_grad_(True) for p in params)
        with torch.enable_grad():
            g = torch.autograd.grad(f(*ps), ps, create_graph=True)
            dot = cast(torch.Tensor, sum((gi * vi).sum() for gi, vi in zip(g, v)))
            out = torch.autograd.grad(dot, ps, allow_unused=True)
        return tuple(torch.zeros_like(p) if o is None else o.detach() for p, o in zip(ps, out))
    raise ValueError(f"unknown HVP method {method!r}; use 'fwdrev' or 'double_backward'")


def mixed_vjp(
    g: Callable[..., torch.Tensor],
    params: Sequence[torch.Tensor],
    x: Sequence[torch.Tensor],
    v: Sequence[torch.Tensor],
    *,
    create_graph: bool = False,
) -> Params:
    """∂/∂x ⟨∇_w g(w, x), v⟩ = (∇²_{xw} g)ᵀ v, for scalar ``g(params_tuple, x_tuple)``.

    ``x`` may be inputs (poisoned points) or another network's parameters (the attacker θ).
    """
    ps = tuple(p.detach().requires_grad_(True) for p in params)
    xs = tuple(t if t.requires_grad else t.detach().requires_grad_(True) for t in x)
    with torch.enable_grad():
        gw = torch.autograd.grad(g(ps, xs), ps, create_graph=True)
        dot = cast(torch.Tensor, sum((gi * vi).sum() for gi, vi in zip(gw, v)))
        out = torch.autograd.grad(dot, xs, allow_unused=True, create_graph=create_graph)
    return tuple(torch.zeros_like(t) if o is None else (o if create_graph else o.detach()) for t, o in zip(xs, out))


def dataset_hvp(
    make_f: Callable[[slice], Callable[..., torch.Tensor]],
    n: int,
    params: Sequence[torch.Tensor],
    v: Sequence[torch.Tensor],
    chunk_size: int | None = None,
    method: str = "fwdrev",
) -> Params:
    """HVP of a *mean* loss over ``n`` points, summed chunk by chunk (bounded memory).

    ``make_f(sl)`` returns the mean loss over the points in slice ``sl`` as a function of params.
    """
    chunk = chunk_size or n
    total: list[torch.Tensor] | None = None
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        part = hvp(make_f(sl), params, v, method)
        scale = (sl.stop - sl.start) / n
        total = [p * scale for p in part] if total is None else [t + p * scale for t, p in zip(total, part)]
    assert total is not None
    return tuple(total)
