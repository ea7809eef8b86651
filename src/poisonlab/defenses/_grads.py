"""Per-sample quantities shared by the defenses, vectorised (no Python loop over points).

* ``per_sample_losses``  (N,)   cross-entropy of each point under a model
* ``per_sample_grads``   (N, P) ∇_w ℓ(z_i, w) for the chosen parameters, ``torch.func.vmap`` of
  ``torch.func.grad`` over the engine's :func:`poisonlab.autodiff.functional_loss`, in chunks
* ``head_features``      (N, D) the input of the model's classification head (its "features";
  the flattened input for logistic regression)

Which layer is "the head" (:func:`head_module`), for any ``nn.Module``: ``model.head`` when the
model has ``features`` and ``head`` submodules and ``head`` is an ``nn.Linear`` (poisonlab's
``nn`` / ``cnn`` / ``resnet18``); otherwise the last ``nn.Linear`` in module order (``lr``, and the
fallback for a user's own module). A model without any ``nn.Linear`` has no head:
:class:`~poisonlab.errors.UnsupportedError`. The features are captured by a forward hook on the
head's input, so the model's own ``forward`` is run unchanged; a head that the forward pass never
calls is also :class:`~poisonlab.errors.UnsupportedError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from ..autodiff import functional_loss, named_params
from ..errors import ConfigError, UnsupportedError
from ..seeding import device_generator
from ..training import predict_logits

if TYPE_CHECKING:
    from ..data.types import Dataset
    from ..training.victim import Victim


def head_module(model: nn.Module) -> tuple[str, nn.Linear]:
    """(qualified name, module) of the classification head (see the module docstring)."""
    head, features = getattr(model, "head", None), getattr(model, "features", None)
    if isinstance(head, nn.Linear) and isinstance(features, nn.Module):
        return "head", head
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise UnsupportedError(f"{type(model).__name__} has no nn.Linear layer, so no classification head whose "
                               "input could serve as its features")
    return found[-1]


def param_names(model: nn.Module, which: str) -> list[str]:
    """``which="head"``: the head's (:func:`head_module`) trainable weight and bias; ``"all"``: every
    trainable parameter."""
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
    in ``names`` order, computed by ``vmap(grad(.))`` in chunks of ``chunk_size`` points on the
    model's device and gathered on the CPU (N·P numbers may not fit next to the model)."""
    model.eval()
    names = list(names)
    _, params = named_params(model, names)
    device = params[0].device

    loss = functional_loss(model, names)

    def one(ps: tuple[torch.Tensor, ...], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss(ps, xi.unsqueeze(0), yi.unsqueeze(0))

    g_fn = vmap(grad(one), in_dims=(None, 0, 0))
    n = len(x)
    total = sum(p.numel() for p in params)
    out = torch.empty(n, total, dtype=dtype or params[0].dtype, device="cpu")
    for start in range(0, n, chunk_size):
        xs = x[start : start + chunk_size].to(device, params[0].dtype)
        ys = y[start : start + chunk_size].to(device)
        gs = g_fn(params, xs, ys)
        out[start : start + len(xs)] = torch.cat([g.reshape(len(xs), -1) for g in gs], 1).to("cpu", out.dtype)
    return out


@torch.no_grad()
def head_features(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """(N, D) inputs of the model's classification head (:func:`head_module`, captured with a
    forward hook; the head's last call per batch), flattened, on CPU."""
    model.eval()
    _, head = head_module(model)
    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    out: list[torch.Tensor] = []
    try:
        p0 = next(model.parameters())
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            seen.clear()
            model(xb.to(p0.device, p0.dtype))
            if not seen or seen[-1].ndim < 1 or seen[-1].shape[0] != len(xb):
                what = "never calls it" if not seen else f"calls it on a tensor of shape {tuple(seen[-1].shape)}"
                raise UnsupportedError(f"{type(model).__name__}: its head {type(head).__name__}({head.in_features} -> "
                                       f"{head.out_features}) does not see one row per input (the forward pass {what}), "
                                       "so its input cannot serve as per-point features")
            out.append(seen[-1].flatten(1).cpu())
    finally:
        hook.remove()
    return torch.cat(out) if out else torch.empty(0, head.in_features, device="cpu")


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
        return torch.zeros(m.shape[-1], dtype=m.dtype, device=m.device)
    if method == "auto":
        method = "exact" if min(m.shape) <= exact_limit else "randomized"
    if method == "exact":
        v = torch.linalg.svd(m, full_matrices=False).Vh[0]
    elif method == "randomized":
        k = min(q, *m.shape)
        g = device_generator(generator if generator is not None else torch.Generator().manual_seed(0), m.device)
        basis = torch.linalg.qr(torch.randn(m.shape[1], k, generator=g, dtype=m.dtype, device=g.device).to(m.device)).Q  # (P, k)
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
    ``params`` (other parameters and buffers fixed): :func:`poisonlab.autodiff.functional_loss` with
    ``reduction="none"``, the pure per-sample loss used by ``influence``."""
    return functional_loss(model, names, reduction="none")


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


def probe_head(victim: "Victim", data: "Dataset", who: str, *, hint: str = "", trainable: bool = True) -> nn.Module:
    """The up-front check of a defense that reads the victim's head (``check_supported``): build a
    fresh victim (cheap: one initialisation, no training), find its head and run two points of
    ``data`` through it with the feature hook (``trainable``: the head must also have trainable
    parameters, for defenses that differentiate it). Raises :class:`~poisonlab.errors.UnsupportedError`
    naming ``who`` (and ``hint``) when the model has no usable head; returns the fresh model."""
    model = victim.spec.build(victim.seed)
    try:
        _, head = head_module(model)
        if trainable and not any(p.requires_grad for p in head.parameters()):
            raise UnsupportedError(f"{type(model).__name__}: its head has no trainable parameters")
        head_features(model, data.x[:2])
    except UnsupportedError as exc:
        raise UnsupportedError(f"{who}: needs the victim's classification head ({exc}){'; ' + hint if hint else ''}") from None
    return model
