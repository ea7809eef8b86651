"""Influence defense (Koh & Liang 2017, "Understanding black-box predictions via influence
functions"; thesis Table 2.11).

Threat model: the defender trains the victim on D (N points) and holds a small trusted clean
reference set R (in the protocol: the held-out clean split D_v). Upweighting a training point z by
ε moves the optimum by −ε H⁻¹ ∇_w ℓ(z, ŵ), so the reference loss changes at rate

    I_up,loss(z, R) = −∇_w L_R(ŵ)ᵀ (H + λI)⁻¹ ∇_w ℓ(z, ŵ),        H = ∇²_w (1/N) Σ_i ℓ(z_i, ŵ)

(Koh & Liang eq. 2). A point with a large positive influence *hurts* the clean reference loss: the
score is I_up,loss and the most influential points are removed. One inverse-Hessian-vector product
s = (H + λI)⁻¹ ∇L_R (the autodiff engine's CG over chunked HVPs) serves every point; the N scores
are then −∇ℓ(z_i)ᵀ s, computed for all points at once as a forward-mode directional derivative
(``torch.func.jvp``) of the per-sample loss vector (N,) — no loop over points. ``params="head"``
(default) restricts w to the victim's classification head (as Koh & Liang do for Inception; for ``lr``
this is the whole model; for a user's module the last ``nn.Linear``, see
:mod:`poisonlab.defenses._grads`); when the logits are exactly head(features) the frozen features
feeding it are computed once, otherwise the loss goes through the whole network with only the head
free. ``params="all"`` uses every trainable parameter and needs no head (any ``nn.Module``). The
recipe's weight decay is added to the damping λ (it is part of the Hessian). Inputs of any shape
and bounds (nothing here reads them beyond the model's forward pass).

Unsupported (:class:`~poisonlab.errors.UnsupportedError` before any training): ``params="head"``
on a model without an ``nn.Linear`` head that its forward pass calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import jvp

from ..autodiff import CGOptions, InverseHVP, inverse_hvp, named_params
from ..data.types import Dataset
from ..errors import ConfigError
from ..training.victim import Victim
from ..validation import check_int, check_number
from ._grads import head_features, head_inputs, param_names, per_sample_loss_fn, probe_head
from .base import Defense, DefenseConfig, register_defense

PerSampleLoss = Callable[[Sequence[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


def reference_gradient(loss_fn: PerSampleLoss, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                       chunk_size: int) -> tuple[torch.Tensor, ...]:
    """∇_w of the mean loss over (x, y), accumulated over chunks."""
    ps = tuple(p.detach().requires_grad_(True) for p in params)
    total = [torch.zeros_like(p) for p in params]
    m = len(x)
    with torch.enable_grad():
        for start in range(0, m, chunk_size):
            part = loss_fn(ps, x[start : start + chunk_size], y[start : start + chunk_size]).sum() / m
            for t, g in zip(total, torch.autograd.grad(part, ps)):
                t.add_(g)
    return tuple(total)


#: the default solve of :func:`influence_on_reference` (no damping, tol 1e-8, 200 iterations)
REFERENCE_SOLVE = CGOptions(tol=1e-8, max_iter=200)


def influence_on_reference(
    loss_fn: PerSampleLoss,
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
    *,
    solver: CGOptions = REFERENCE_SOLVE,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, InverseHVP]:
    """I_up,loss(z_i, R) for every training point z_i = (x_i, y_i): (N,) and the CG solve.

    ``loss_fn(params, x, y)`` returns per-sample losses (n,); the training objective is their mean
    plus (λ/2)‖w‖² folded into the Hessian as H + λI, λ = ``solver.damping``; ``solver`` holds the
    options of the CG solve of (H + λI) s = ∇L_R.
    """
    params = tuple(p.detach() for p in params)
    n = len(x)
    if len(ref_x) == 0:
        raise ConfigError("influence: the reference set is empty")

    def mean_loss(p, xb, yb):
        return loss_fn(p, xb, yb).mean()

    g_ref = reference_gradient(loss_fn, params, ref_x, ref_y, chunk_size)
    solve = inverse_hvp(mean_loss, params, g_ref, x, y, solver=solver, chunk_size=chunk_size)
    s = tuple(t.detach() for t in solve.value)
    scores = []
    for start in range(0, n, chunk_size):
        xs, ys = x[start : start + chunk_size], y[start : start + chunk_size]
        directional = jvp(lambda *p, xs=xs, ys=ys: loss_fn(p, xs, ys), params, s)[1]  # ∇ℓ(z_i)ᵀ s for each i
        scores.append(-directional.detach())
    return torch.cat(scores) if scores else torch.empty(0, device=x.device), solve


@dataclass(frozen=True, kw_only=True)
class InfluenceConfig(DefenseConfig):
    """Options of the influence defense (Koh & Liang 2017).

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points to remove, in [0, 1]. Default 0.03.
        params: Which parameters w the influence is taken with respect to: "head" (default) — the
            victim's classification head (its last ``nn.Linear``; the whole model for ``lr``);
            "all" — every trainable parameter (any ``nn.Module``, no head needed, slower).
        damping: Damping λ added to the Hessian, (H + λI)⁻¹, so that the inverse exists and the
            conjugate-gradient solve is well conditioned; a number >= 0, in the units of the
            training loss' curvature. The recipe's weight decay is added to it. Default 0.01.
        cg_tol: Relative tolerance of the conjugate-gradient solve of (H + λI) s = ∇L_R: it stops
            when the residual norm is at most cg_tol · ‖∇L_R‖ (dimensionless); a number > 0.
            Default 1e-5.
        cg_max_iter: Maximum number of conjugate-gradient iterations (each one Hessian-vector
            product over the whole training set); a positive integer. Whether CG converged is
            reported in ``info["cg_converged"]``. Default 100.
        chunk_size: Number of points per chunk in the reference gradient, the Hessian-vector
            products and the per-point scores; a positive integer. Only memory and speed depend
            on it. Default 4096.
    """

    params: str = "head"  # "head" (last linear layer) or "all"
    damping: float = 0.01
    cg_tol: float = 1e-5
    cg_max_iter: int = 100
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.params not in ("head", "all"):
            raise ConfigError(f"influence: params must be 'head' or 'all', got {self.params!r}")
        check_number(self.damping, "damping", "influence", allow_zero=True)
        check_number(self.cg_tol, "cg_tol", "influence")
        check_int(self.cg_max_iter, "cg_max_iter", "influence")
        check_int(self.chunk_size, "chunk_size", "influence")


@register_defense("influence")
class InfluenceDefense(Defense[InfluenceConfig]):
    summary = "remove the points whose upweighting most increases a clean reference loss (Koh & Liang 2017)"

    def check_supported(self, data: Dataset, victim: Victim) -> None:
        if self.config.params == "head":
            probe_head(victim, data, "influence with params='head'", hint="use params='all'")

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        if reference is None:
            raise ConfigError("influence: needs a trusted clean reference set (the protocol passes D_v)")
        c: InfluenceConfig = self.config
        trained = self.trained_model(data, victim, model, progress)
        names = param_names(trained, c.params)
        net, x, rx = trained, data.x, reference.x
        fast = head_inputs(trained, data.x) if c.params == "head" else None
        if fast is not None:  # logits = head(features): work on the frozen features, computed once
            net, x = fast
            rx = head_features(trained, reference.x)
            names = [n for n, p in net.named_parameters() if p.requires_grad]
        _, params = named_params(net, names)
        device, dtype = params[0].device, params[0].dtype
        scores, solve = influence_on_reference(
            per_sample_loss_fn(net, names), params,
            x.to(device, dtype), data.y.to(device), rx.to(device, dtype), reference.y.to(device),
            solver=CGOptions(damping=c.damping + victim.spec.recipe.weight_decay, tol=c.cg_tol, max_iter=c.cg_max_iter),
            chunk_size=c.chunk_size,
        )
        info = {"cg_iterations": solve.cg.iterations, "cg_residual": solve.cg.residual_norm,
                "cg_converged": solve.cg.converged, "params": param_names(trained, c.params),
                "head_fast_path": fast is not None}
        return scores, info
