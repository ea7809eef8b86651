"""Hessian-vector products and mixed second-order products (the one implementation).

Threat-model agnostic calculus used by TGDA (total gradient), back-gradient, Gradient Canceling
(∂/∂z of gradient norms) and influence functions:

* ``hvp(f, params, v, *args)``                 = ∇²_w f(w, *args) · v       (forward-over-reverse, or double backward)
* ``mixed_vjp(f, params, v, *args, argnums=i)`` = ∂/∂args[i] ⟨∇_w f(w, *args), v⟩ = ∇²_{xw} f · v
  (x = args[i]: poison inputs, or another network's output)
* ``dataset_hvp(f, params, v, *args)``         = ∇²_w of a *mean* loss over large ``args``, in chunks (bounded memory)
* ``GradientGraph(f, params, *args, argnums=i)`` builds ∇_w f once and gives both products (``hvp``,
  ``mixed``) by double backward through it: a solve of k products and its mixed product share one
  forward and one backward pass instead of k + 1

Every ``f`` follows the functional convention of :mod:`poisonlab.autodiff.params`: ``f(params, *args)``
with ``params`` a tuple of tensors.
"""

from __future__ import annotations

from typing import Sequence, cast, overload

import torch
from torch.func import grad, jvp

from .params import Functional, Params

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

def hvp(f: Functional, params: Sequence[torch.Tensor], v: Sequence[torch.Tensor], *args: torch.Tensor,
        method: str = "fwdrev") -> Params:
    """∇²_w f(w, *args)·v at w = ``params``, for scalar ``f(params, *args)``.

    ``method="fwdrev"``: forward-mode over reverse-mode (``torch.func.jvp`` of ``torch.func.grad``),
    one pass, no graph kept (falls back to double backward, with one warning, when an op has no
    forward-mode rule). ``method="double_backward"``: ∇_w ⟨∇_w f, v⟩ with ``torch.autograd``
    (works for every op, less per-call overhead on small models).
    """
    params, v = tuple(params), tuple(v)
    if method == "fwdrev":
        def f_of_params(ps: Params) -> torch.Tensor:
            return f(ps, *args)

        try:
            _, out = jvp(grad(f_of_params), (params,), (v,))[:2]
            return tuple(out)
        except (RuntimeError, NotImplementedError) as exc:
            if not _no_forward_rule(exc):
                raise  # e.g. CUDA out of memory: never hidden behind a silent fallback
            _warn_fallback(exc)
            method = "double_backward"
    if method == "double_backward":
        ps = tuple(p.detach().requires_grad_(True) for p in params)
        with torch.enable_grad():
            g = torch.autograd.grad(f(ps, *args), ps, create_graph=True)
            dot = cast(torch.Tensor, sum((gi * vi).sum() for gi, vi in zip(g, v)))
            out = torch.autograd.grad(dot, ps, allow_unused=True)
        return tuple(torch.zeros_like(p) if o is None else o.detach() for p, o in zip(ps, out))
    raise ValueError(f"unknown HVP method {method!r}; use 'fwdrev' or 'double_backward'")


class GradientGraph:
    """∇_w f(w, *args) with its autograd graph kept, for many second-order products at one point.

    ``hvp(v)`` = ∇²_w f · v and ``mixed(v)`` = ∂/∂args[i] ⟨∇_w f, v⟩ (i in ``argnums``), each by one
    backward pass through the stored graph — the same products as :func:`hvp` (``"double_backward"``)
    and :func:`mixed_vjp`, without recomputing f and ∇_w f for each. The graph lives as long as the
    object; drop it after the solve.
    """

    def __init__(self, f: Functional, params: Sequence[torch.Tensor], *args: torch.Tensor,
                 argnums: Sequence[int] = ()) -> None:
        self.params = tuple(p.detach().requires_grad_(True) for p in params)
        full = list(args)
        for i in argnums:
            full[i] = full[i].detach().requires_grad_(True)
        self.inputs = tuple(full[i] for i in argnums)
        with torch.enable_grad():
            self.grad = torch.autograd.grad(f(self.params, *full), self.params, create_graph=True)

    def _dot(self, v: Sequence[torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, sum((gi * vi).sum() for gi, vi in zip(self.grad, v)))

    def hvp(self, v: Sequence[torch.Tensor]) -> Params:
        """∇²_w f · v (shaped like the parameters)."""
        with torch.enable_grad():
            out = torch.autograd.grad(self._dot(v), self.params, retain_graph=True, allow_unused=True)
        return tuple(torch.zeros_like(p) if o is None else o.detach() for p, o in zip(self.params, out))

    def mixed(self, v: Sequence[torch.Tensor]) -> Params:
        """(∇²_{x w} f)ᵀ v for each differentiated argument x (one tensor per entry of ``argnums``)."""
        with torch.enable_grad():
            out = torch.autograd.grad(self._dot(v), self.inputs, retain_graph=True, allow_unused=True)
        return tuple(torch.zeros_like(t) if o is None else o.detach() for t, o in zip(self.inputs, out))


@overload
def mixed_vjp(f: Functional, params: Sequence[torch.Tensor], v: Sequence[torch.Tensor], *args: torch.Tensor,
              argnums: int = 0, create_graph: bool = False) -> torch.Tensor: ...
@overload
def mixed_vjp(f: Functional, params: Sequence[torch.Tensor], v: Sequence[torch.Tensor], *args: torch.Tensor,
              argnums: Sequence[int], create_graph: bool = False) -> Params: ...
def mixed_vjp(
    f: Functional,
    params: Sequence[torch.Tensor],
    v: Sequence[torch.Tensor],
    *args: torch.Tensor,
    argnums: int | Sequence[int] = 0,
    create_graph: bool = False,
) -> torch.Tensor | Params:
    """∂/∂x ⟨∇_w f(w, *args), v⟩ = (∇²_{xw} f)ᵀ v for x = ``args[argnums]``, scalar ``f(params, *args)``.

    ``x`` may be inputs (poisoned points) or another network's output (the generator's poisons).
    Returns one tensor shaped like ``args[argnums]`` for an integer ``argnums``, a tuple for a
    sequence. An ``x`` that already requires grad is differentiated as it is (with
    ``create_graph`` the result stays differentiable in what ``x`` depends on).
    """
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    ps = tuple(p.detach().requires_grad_(True) for p in params)
    full = list(args)
    for i in nums:
        full[i] = full[i] if full[i].requires_grad else full[i].detach().requires_grad_(True)
    xs = tuple(full[i] for i in nums)
    with torch.enable_grad():
        gw = torch.autograd.grad(f(ps, *full), ps, create_graph=True)
        dot = cast(torch.Tensor, sum((gi * vi).sum() for gi, vi in zip(gw, v)))
        out = torch.autograd.grad(dot, xs, allow_unused=True, create_graph=create_graph)
    res = tuple(torch.zeros_like(t) if o is None else (o if create_graph else o.detach()) for t, o in zip(xs, out))
    return res[0] if isinstance(argnums, int) else res


def dataset_hvp(
    f: Functional,
    params: Sequence[torch.Tensor],
    v: Sequence[torch.Tensor],
    *args: torch.Tensor,
    chunk_size: int | None = None,
    method: str = "fwdrev",
) -> Params:
    """∇²_w F(w)·v for the *mean* F over N points of ``f(params, *args)`` — ``f`` the mean loss of
    its batch, ``args`` (e.g. ``x`` (N, ...), ``y`` (N,)) sliced along dim 0 into chunks of
    ``chunk_size`` (default: one chunk), each chunk's HVP weighed by its share of the N points.
    """
    n = len(args[0]) if args else 0
    chunk = chunk_size or n
    if n == 0 or chunk >= n:
        return hvp(f, params, v, *args, method=method)
    total: list[torch.Tensor] | None = None
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        part = hvp(f, params, v, *(a[sl] for a in args), method=method)
        scale = (sl.stop - sl.start) / n
        total = [p * scale for p in part] if total is None else [t + p * scale for t, p in zip(total, part)]
    assert total is not None
    return tuple(total)

