"""The ``"reachable"`` target maker: the most damaging target that box-bounded poisons can still reach.

Model-targeted attacks (Gradient Canceling, thesis §3.4–3.5; Lu, Kamath & Yu, ICML 2023) can only
arrive at a target w that ε·N poisons with inputs in the data's box can make stationary. For a
*linear softmax* victim (logits W·flatten(x) + b, e.g. ``lr``: :func:`poisonlab.theory.as_linear_softmax`)
the box gauge τ_gauge(w) (:func:`poisonlab.theory.box.linear_box_gauge`) is a necessary condition:
ε ≥ τ_gauge(w). This maker searches, from the clean victim, for the target of lowest D_v accuracy
with τ_gauge(w) ≤ ``limit``·ε:

* the damage direction is the ascent direction of the D_v cross-entropy (GradPC's objective);
* the constraint's gradient is ∂τ/∂w = H(w)·(−V): V is the LP's dual direction (−V = ∂τ/∂g, g the
  clean mean gradient at w) pulled back through g(w) by one Hessian-vector product of the clean loss
  (:func:`poisonlab.autodiff.dataset_hvp`);
* every step has length ``step``·‖w_clean‖ along the normalised damage direction; once τ_gauge
  exceeds ``band``·limit·ε the step keeps only the damage direction's component tangent to the
  constraint and adds a first-order correction back to ``band``·limit·ε (at most one step long);
  above limit·ε it takes the correction alone — or, before any iterate was feasible (an
  under-trained clean victim), a Newton step H(w)·Δ = −(1 − band·limit·ε/τ_gauge)·g (conjugate
  gradients; at most ten steps long), which shrinks g — and τ_gauge, homogeneous in g — to first
  order to the band (the gradient of τ alone is slow there when H is ill-conditioned; once feasible,
  Newton steps wander along H's flat directions, moving w far for little D_v accuracy; measured:
  docs/studies/gradient-canceling.md);
* the feasible iterate (τ_gauge ≤ limit·ε) of lowest D_v accuracy (ties: highest D_v loss) is the
  target.

The maker hands Gradient Canceling its plan, :data:`REACHABLE_PLAN` (a
:class:`~poisonlab.attacks.targets.GCPlan`: plan labels, 600 Adam steps of 0.05): ``gc`` with
``target: reachable`` runs it for every one of ``init`` / ``steps`` / ``lr`` left unset, so the
certificate τ_gauge ≤ limit·ε and the GC run it was measured with go together (measured on MNIST LR: docs/studies/gradient-canceling.md).

It is a local search: it finds *a* damaging target that passes the necessary condition, not the
most damaging one over all targets. Each step solves one box-gauge LP, the search's main cost (its time
on MNIST LR: docs/studies/table-2-2.md). On other victims (no box gauge) it raises :class:`~poisonlab.errors.UnsupportedError`
before any work; so does an unbounded box.

Shapes: D_tr x (N, *input_shape) inside the bounds, y (N,); D_v likewise; the target has the
victim's parameters.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..autodiff import (
    CGOptions,
    dataset_hvp,
    flatten,
    functional_loss,
    functional_model,
    inverse_hvp,
    named_params,
    unflatten,
    value_and_grad,
)
from ..data.bounds import Bounds
from ..data.types import Dataset
from ..errors import ConfigError
from ..options import config_to_dict
from ..theory.box import linear_box_gauge
from ..theory.linear import box_limits, linear_gradient_matrix
from .gc import sum_gradient
from .targets import GCPlan, ReachableConfig, TargetContext, TargetMaker, check_gauge_applies, register_target

#: what GC runs on this maker's target unless told otherwise (gc's ``init`` / ``steps`` / ``lr`` left null):
#: the settings the limit 0.8 was measured to be reached with on MNIST LR at ε = 0.03
#: (docs/studies/gradient-canceling.md, "Defaults that reach")
REACHABLE_PLAN = GCPlan(init="plan", steps=600, lr=0.05,
                        evidence="MNIST LR, ε = 0.03, seeds 0-2: residual 0.023-0.048, agreement 98.6-98.9 % "
                                 "(bench/results/table_2_2.json, gc_reachable)")
#: the longest way back from an infeasible iterate, in steps
RESTORE = 10.0
#: the CG solve of the Newton step back, H(w)·Δ = −shrink·g (a rough solve: the step is rescaled anyway)
NEWTON_SOLVE = CGOptions(tol=1e-3, max_iter=50)


def _gauge_direction(V: torch.Tensor, names: list[str], lin: tuple[str, str], w: Sequence[torch.Tensor]) -> torch.Tensor:
    """The LP's dual direction V (C, d+1) = [W | b] (a CPU array of the LP) as a flat vector in the order
    of ``names``, on the parameters' device and in their dtype."""
    parts = {lin[0]: V[:, :-1], lin[1]: V[:, -1]}
    return flatten([parts[n].reshape(p.shape).to(device=p.device, dtype=p.dtype) for n, p in zip(names, w)])


def search_reachable(model: nn.Module, val: Dataset, context: TargetContext, config: ReachableConfig | None = None,
                     progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The constrained search of the module docstring: (target, info). ``model`` (the clean-trained
    linear softmax victim) is left unchanged; ``val`` is D_v, whose accuracy the search lowers;
    ``context`` gives D_tr, the box and the attack's ε. ``info`` holds the target's τ_gauge, its D_v
    accuracy and loss, the step it came from, the trace ``[step, τ_gauge, D_v accuracy, D_v loss]``
    and the seconds (``lp_seconds``: the LPs' share)."""
    c = config or ReachableConfig()
    train, bounds = context.train, context.bounds
    eps = float(c.fraction if c.fraction is not None else context.fraction)
    if not (math.isfinite(eps) and eps > 0):
        raise ConfigError(f"target 'reachable': the poison fraction must be > 0, got {eps!r}")
    shape = train.input_shape
    lin = check_gauge_applies(model, shape, bounds)
    t0 = time.perf_counter()
    target = copy.deepcopy(model).eval()
    names, w = named_params(target)
    device = w[0].device
    x_tr, y_tr = train.x.to(device), train.y.to(device)
    x_v, y_v = val.x.to(device), val.y.to(device)
    n = len(train)
    d = math.prod(shape)
    limits = box_limits(bounds, d, shape)
    loss = functional_loss(target, names)
    logits = functional_model(target, names)
    theta0 = flatten(w).clone()
    theta = theta0.clone()
    length = c.step * float(torch.linalg.vector_norm(theta0))
    bound = c.limit * eps
    band = c.band * bound
    trace: list[list[float]] = []
    best: tuple[float, float, int, torch.Tensor, float] | None = None  # (accuracy, −loss, step, θ, τ)
    lowest = (math.inf, -1)  # the smallest τ_gauge seen, for the error message
    lp_seconds = 0.0
    bar = tqdm(range(c.steps + 1), desc="reachable", disable=not progress, leave=False)
    for it in bar:
        params = unflatten(theta, w)
        g = sum_gradient(target, names, params, x_tr, y_tr, 1.0 / n, c.chunk_size)
        G = linear_gradient_matrix(target, names, g, shape)
        assert G is not None  # check_gauge_applies
        tl = time.perf_counter()
        gauge = linear_box_gauge(G, *limits)
        lp_seconds += time.perf_counter() - tl
        tau = gauge.tau
        if not math.isfinite(tau):
            raise ConfigError("target 'reachable': the data's box is degenerate (lower == upper): no poison can cancel a gradient")
        v_loss, v_grad = value_and_grad(loss, params, x_v, y_v)
        with torch.no_grad():
            v_acc = 100.0 * float((logits(params, x_v).argmax(1) == y_v).double().mean())
        trace.append([it, tau, v_acc, float(v_loss)])
        lowest = min(lowest, (tau, it))
        if tau <= bound and (best is None or (v_acc, -float(v_loss)) < (best[0], best[1])):
            best = (v_acc, -float(v_loss), it, theta.clone(), tau)
        bar.set_postfix(tau_gauge=f"{tau:.4g}", val_acc=f"{v_acc:.2f}")
        if it == c.steps:
            break
        d_dmg = flatten(v_grad)
        move = length * d_dmg / torch.linalg.vector_norm(d_dmg).clamp_min(1e-30)
        if tau > band:
            # ∂τ/∂w = (∂g/∂w)ᵀ ∂τ/∂g = H(w)·(−V): one Hessian-vector product of the clean mean loss
            minus_v = -_gauge_direction(torch.from_numpy(gauge.direction), names, lin, w)
            d_tau = flatten(dataset_hvp(loss, params, unflatten(minus_v, w), x_tr, y_tr, chunk_size=c.chunk_size))
            dn = torch.linalg.vector_norm(d_tau)
            if float(dn) > 0:
                u = d_tau / dn
                back = min((tau - band) / float(dn), length) * u  # first order: τ(w + Δ) ≈ τ + ⟨∂τ, Δ⟩
                if tau > bound and best is None:  # not feasible yet: a Newton step back, at most RESTORE steps long
                    # Δ with H(w)·Δ = −shrink·g, shrink = 1 − band/τ: to first order it scales the clean mean
                    # gradient g, and τ_gauge (homogeneous of degree 1 in g) with it, by band/τ
                    move = flatten(inverse_hvp(loss, params, unflatten(-(1.0 - band / tau) * g, w), x_tr, y_tr,
                                               solver=NEWTON_SOLVE, chunk_size=c.chunk_size).value)
                    move = move * min(1.0, RESTORE * length / float(torch.linalg.vector_norm(move).clamp_min(1e-30)))
                elif tau > bound:  # stepped over the constraint: back along −∂τ/∂w only
                    move = -back
                else:
                    tangent = d_dmg - (d_dmg @ u) * u
                    move = length * tangent / torch.linalg.vector_norm(tangent).clamp_min(1e-30) - back
        theta = theta + move
    bar.close()
    if best is None:
        raise ConfigError(f"target 'reachable': no iterate had τ_gauge ≤ limit·ε = {bound:.4g} (the smallest was {lowest[0]:.4g}, "
                          f"at step {lowest[1]}; the clean victim's is {trace[0][1]:.4g}): raise the poison fraction, "
                          "the limit or the steps")
    v_acc, neg_loss, step, theta_best, tau = best
    with torch.no_grad():
        current = dict(target.named_parameters())
        for name, v in zip(names, unflatten(theta_best, w)):
            current[name].copy_(v)
    info = {
        "source": "reachable",
        **config_to_dict(c),
        "eps": eps,
        "tau_gauge_bound": bound,
        "tau_gauge": tau,
        "tau_gauge_clean": trace[0][1],
        "best_step": step,
        "val_accuracy_clean": trace[0][2],
        "val_accuracy_target": v_acc,
        "val_loss_clean": trace[0][3],
        "val_loss_target": -neg_loss,
        "relative_change": float(torch.linalg.vector_norm(theta_best - theta0) / torch.linalg.vector_norm(theta0).clamp_min(1e-30)),
        "trace": trace,
        "lp_seconds": lp_seconds,
        "seconds": time.perf_counter() - t0,
    }
    return target.eval(), info


@register_target("reachable")
class ReachableTarget(TargetMaker[ReachableConfig]):
    """The most damaging target found whose box gauge τ_gauge stays ≤ limit·ε (:func:`search_reachable`);
    linear softmax victims on bounded data only (:func:`~poisonlab.attacks.targets.check_gauge_applies`)."""

    summary = "linear softmax victims: the most damaging target found with τ_gauge ≤ limit·ε (at ε = the fraction)"
    needs_context = True  # D_tr, the box and ε (TargetContext)
    gc_plan = REACHABLE_PLAN  # gc's init / steps / lr when not set
    report_keys = ("eps", "limit", "tau_gauge_bound", "tau_gauge", "tau_gauge_clean", "best_step", "val_accuracy_clean",
                   "val_accuracy_target", "val_loss_clean", "val_loss_target", "relative_change", "lp_seconds", "seconds")
    metadata_keys = ("eps", "limit", "tau_gauge")

    def check_supported(self, model: nn.Module, input_shape: Sequence[int], bounds: Bounds) -> None:
        check_gauge_applies(model, input_shape, bounds)

    def make(self, model: nn.Module, val: Dataset, *, progress: bool = False,
             context: TargetContext | None = None) -> tuple[nn.Module, dict[str, Any]]:
        if context is None:
            raise ConfigError("target 'reachable' is made for a poisoning problem: give context=")
        return search_reachable(model, val, context, self.config, progress)
