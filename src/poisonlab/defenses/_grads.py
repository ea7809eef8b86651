"""Per-sample quantities shared by the defenses, vectorised (no Python loop over points).

* ``per_sample_losses``  (N,)   cross-entropy of each point under a model
* ``per_sample_grads``   (N, P) ∇_w ℓ(z_i, w) for the chosen parameters, ``torch.func.vmap`` of
  ``torch.func.grad`` over the engine's :func:`poisonlab.autodiff.loss_of_params`, in chunks
* ``head_features``      (N, D) the input of the model's last ``nn.Linear`` (its "features";
  the flattened image for logistic regression)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from ..autodiff import loss_of_params, named_params
from ..errors import ConfigError
from ..training import predict_logits


def head_module(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` in module order (the classification head)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear head; use params='all'")
    return found[-1]


def param_names(model: nn.Module, which: str) -> list[str]:
    """``which="head"``: the last linear layer's weight and bias; ``"all"``: every trainable parameter."""
    if which == "all":
        return named_params(model)[0]
    if which == "head":
        prefix, head = head_module(model)
        return [f"{prefix}.{n}" if prefix else n for n, p in head.named_parameters() if p.requires_grad]
    raise ConfigError(f"params must be 'head' or 'all', got {which!r}")


@torch.no_grad()
def per_sample_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) cross-entropy of each point, eval mode, on CPU."""
    logits = predict_logits(model, x)
    return F.cross_entropy(logits, y.to(logits.device), reduction="none")


def per_sample_grads(
    model: nn.Module, names: Sequence[str], x: torch.Tensor, y: torch.Tensor, *, chunk_size: int = 2048,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(N, P) per-sample gradients of the cross-entropy w.r.t. the parameters ``names``, flattened
    in ``names`` order, computed by ``vmap(grad(.))`` in chunks of ``chunk_size`` points."""
    model.eval()
    names = list(names)
    _, params = named_params(model, names)
    device = params[0].device

    def one(ps: tuple[torch.Tensor, ...], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_of_params(model, names, xi.unsqueeze(0), yi.unsqueeze(0))(*ps)

    g_fn = vmap(grad(one), in_dims=(None, 0, 0))
    n = len(x)
    total = sum(p.numel() for p in params)
    out = torch.empty(n, total, dtype=dtype or params[0].dtype)
    for start in range(0, n, chunk_size):
        xs = x[start : start + chunk_size].to(device, params[0].dtype)
        ys = y[start : start + chunk_size].to(device)
        gs = g_fn(params, xs, ys)
        out[start : start + len(xs)] = torch.cat([g.reshape(len(xs), -1) for g in gs], 1).to("cpu", out.dtype)
    return out


@torch.no_grad()
def head_features(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """(N, D) inputs of the model's last linear layer (captured with a forward hook), on CPU."""
    model.eval()
    _, head = head_module(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0].detach().flatten(1).cpu()))
    try:
        p0 = next(model.parameters())
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(p0.device, p0.dtype))
    finally:
        hook.remove()
    return torch.cat(captured) if captured else torch.empty(0, head.in_features)


def top_right_singular_vector(m: torch.Tensor, *, method: str = "auto", generator: torch.Generator | None = None,
                              exact_limit: int = 1024, niter: int = 10, q: int = 8) -> torch.Tensor:
    """The top right singular vector (P,) of ``m`` (N, P), sign fixed so its largest entry is positive.

    ``method="exact"``: ``torch.linalg.svd``; ``"randomized"``: block subspace iteration with a
    Rayleigh-Ritz step (Halko, Martinsson & Tropp 2011, Alg. 4.4) on a random (P, q) start drawn
    from ``generator``; ``"auto"``: exact when min(N, P) <= ``exact_limit``. The iteration only
    multiplies ``m @ V`` and ``Uᵀ @ m`` (never ``mᵀ @ U``, which is many times slower on CPU BLAS
    for a tall ``m``).
    """
    if m.ndim != 2 or min(m.shape) == 0:
        return torch.zeros(m.shape[-1], dtype=m.dtype)
    if method == "auto":
        method = "exact" if min(m.shape) <= exact_limit else "randomized"
    if method == "exact":
        v = torch.linalg.svd(m, full_matrices=False).Vh[0]
    elif method == "randomized":
        k = min(q, *m.shape)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        basis = torch.linalg.qr(torch.randn(m.shape[1], k, generator=g, dtype=m.dtype)).Q  # (P, k)
        for _ in range(niter):
            left = torch.linalg.qr(m @ basis).Q  # (N, k)
            basis = torch.linalg.qr((left.T @ m).T).Q  # (P, k)
        small = torch.linalg.svd(m @ basis, full_matrices=False).Vh  # Rayleigh-Ritz in span(basis)
        v = basis @ small[0]
    else:
        raise ConfigError(f"svd must be 'auto', 'exact' or 'randomized', got {method!r}")
    i = int(v.abs().argmax())
    return v if v[i] >= 0 else -v


def per_sample_loss_fn(model: nn.Module, names: Sequence[str]):
    """``f(params, x, y) -> (n,)`` cross-entropy of each point with parameters ``names`` replaced by
    ``params`` (other parameters and buffers fixed): the pure per-sample loss used by ``influence``."""
    from torch.func import functional_call

    names = list(names)
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in set(names)}
    fixed.update(dict(model.named_buffers()))

    def f(params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**fixed, **dict(zip(names, params))}, (x,))
        return F.cross_entropy(logits, y, reduction="none")

    return f


def head_inputs(model: nn.Module, x: torch.Tensor, check: int = 256) -> tuple[nn.Linear, torch.Tensor] | None:
    """(head, features (N, D)) when the model's logits are exactly ``head(features)`` — checked on the
    first ``check`` points — so head-only gradients / HVPs can skip the frozen feature extractor
    (computed once). None when something follows the head (then use the full model)."""
    _, head = head_module(model)
    feats = head_features(model, x)
    k = min(check, len(x))
    p0 = next(model.parameters())
    with torch.no_grad():
        model.eval()
        logits = model(x[:k].to(p0.device, p0.dtype)).cpu()
        ok = torch.allclose(head(feats[:k].to(p0.device, p0.dtype)).cpu(), logits, rtol=1e-5, atol=1e-6)
    return (head, feats) if ok else None
