"""Gradient Canceling (GC): thesis Algorithm 2 (Lu, Kamath & Yu, ICML 2023, §3.5).

Threat model: model-targeted, clean-label, additive. The attacker knows D_tr, the victim's
architecture and loss, and picks a *target* parameter w (by default a GradPC corruption of the
clean victim, ε_w = 0.5, or any saved ``.safetensors`` state). It adds n = ε·N points z_j whose
labels stay those of the clean points they start from, and moves their inputs (inside the data's
bounds: pixels in [0, 1] for images, per-feature ranges for tabular data) so that w becomes a
stationary point of retraining on D_tr ∪ D_p:

    min_{x_1..x_n ∈ box}  L = ½‖g(μ) + (1/N)·Σ_j ∇_w ℓ(z_j, w)‖²            (eq. 3.14, ε·g(ν̂) = (1/N)Σ_j)

∂L/∂x_j = (1/N)·∇_x⟨∇_w ℓ(z_j, w), r⟩ with r = g(μ) + (1/N)Σ_j ∇_w ℓ(z_j, w) (eq. 3.15) is one
mixed product of :func:`poisonlab.autodiff.mixed_vjp`. Steps are Adam (or RMS-normalised) on the
inputs, projected onto the data's bounds (and the optional L∞ ball of ``radius``, in the data's
units) after each step — the published script's plain steps of size 10 without projection
diverge. ``projection: none`` drops that projection (Algorithm 2, line 7): the poisons may then
leave the data's bounds (pixels outside [0, 1]), which the published script allows and the
toolkit's contract otherwise refuses; it is for comparing with published numbers
(``bench/gc_unbounded.py``), not an attack on valid inputs. ‖r‖/(1+ε) is the gradient norm of the target over the mixed set.

Any victim module works. For a *linear softmax* victim (:func:`poisonlab.theory.as_linear_softmax`:
logits W·flatten(x) + b, e.g. ``lr``) the attack also reports the box-bounded necessary conditions
τ_box and τ_gauge of :mod:`poisonlab.theory.box` for the data's box (scalar or per-feature); for
other victims they are reported as not applicable (``info["box_not_applicable"]`` says why).

Defaults and what they reach (docs/studies/gradient-canceling.md). The default target, GradPC with
ε_w = 0.5, is *not reachable* with pixels in [0, 1] at small ε: on MNIST LR its τ_gauge is 0.90, so at
ε = 0.03 GC stalls at a relative residual of 0.97. ``converged`` is false, and the drop (2.11, Table 2.2)
comes from poisons that do not make the target stationary. This is kept as the default because it is
the thesis' target. ``target: reachable`` is the target GC does reach: with the maker's plan (its
defaults) the residual is ≤ 0.05 and the retrained victim agrees with the target on ≥ 98.5 % of MNIST's
test images (seeds 0–2). The tolerance ``tol`` is a stopping rule that box-bounded poisons rarely meet,
so ``converged`` is false there too; ``final_rel_grad_norm`` is the measure.

Shapes: poisons x (n, *input_shape) inside the bounds (``projection: none``: anywhere), y (n,) int64,
source_index (n,) into D_tr.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from ..autodiff import Params, directional, flatten, functional_loss, mixed_vjp, named_params, unflatten, value_and_grad
from ..cache import ArtifactCache
from ..data.bounds import Bounds
from ..data.types import AttackData, Dataset, PoisonSet
from ..errors import ConfigError, DivergenceError, UnsupportedError
from ..options import config_to_dict
from ..theory import min_poison_count, multiclass_reachability
from ..theory.box import BoxGauge
from ..theory.linear import box_gauge, box_report, linear_gradient_matrix, linear_softmax_names
from ..training import Victim, accuracy, predict_logits
from ..validation import check_choice, check_int, check_number, check_radius
from ._radius import project
from .base import Attack, AttackConfig, register_attack
from .gradpc import GradPCConfig
from .targets import ReachableConfig, TargetContext, check_gauge_applies, is_target_path, make_target, maker_plan

WHAT = "attack 'gc'"
#: gc's own defaults of ``init``, ``steps`` and ``lr``, for targets whose maker hands no plan (GradPC, a saved model)
DEFAULT_INIT, DEFAULT_STEPS, DEFAULT_LR = "random", 300, 0.02
#: Algorithm 2, line 7: "box" projects every step onto the data's bounds (and the radius ball), "none" does not
PROJECTIONS = ("box", "none")


class GCSettings(NamedTuple):
    """The starting points, steps and step size one GC run uses (:meth:`GCConfig.settings`);
    ``plan_from`` names the target maker whose :class:`~poisonlab.attacks.targets.GCPlan` gave the
    settings that were not set (None: gc's own defaults)."""

    init: str
    steps: int
    lr: float
    plan_from: str | None


@dataclass(frozen=True, kw_only=True)
class GCConfig(AttackConfig):
    """Options of :class:`GradientCanceling`. The target is ``target`` (a maker's name, ``"gradpc"``
    or ``"reachable"``, or a saved model) and, for ``"gradpc"``, the option group ``target_options`` — GradPC's own
    options (:class:`~poisonlab.attacks.gradpc.GradPCConfig`: ``-A target_options.eps_w=0.1
    -A target_options.steps=200``, ``--eps-w`` / ``--pc-steps`` on the command line); for
    ``"reachable"`` the option group ``reachable``
    (:class:`~poisonlab.attacks.targets.ReachableConfig`: ``-A reachable.steps=30``).

    Attributes:
        target: The target model w: ``"gradpc"`` (a GradPC corruption of the clean victim, made with
            ``target_options`` and kept in the artifact cache), ``"reachable"`` (linear softmax
            victims: the most damaging target found with τ_gauge ≤ limit·ε, made with ``reachable``;
            its maker hands GC its plan — ``init``, ``steps``, ``lr`` — for the options left null), another
            registered target maker, or the path of a ``.safetensors`` state of the victim architecture.
            Default ``"gradpc"``.
        target_options: GradPC's options when ``target`` is ``"gradpc"``
            (:class:`~poisonlab.attacks.gradpc.GradPCConfig`). Default its defaults (ε_w = 0.5,
            50 steps).
        reachable: The ``"reachable"`` maker's options when ``target`` is ``"reachable"``
            (:class:`~poisonlab.attacks.targets.ReachableConfig`). Default its defaults
            (limit 0.8, 20 steps of 0.01·‖w‖).
        params: Names of the parameter tensors whose gradient is cancelled; empty: every trainable
            parameter. Default ``()``.
        steps: Optimisation steps on the poison inputs (an integer >= 0); null: the target maker's
            plan (``"reachable"``: 600), else 300. Default null.
        lr: Step size on the poison inputs, in the data's units; null: the target maker's plan
            (``"reachable"``: 0.05), else 0.02. Default null.
        optimizer: ``"adam"`` (projected Adam) or ``"normalized"`` (steps of the gradient divided by
            its RMS). Default ``"adam"``.
        schedule: ``"constant"`` or ``"cosine"`` (lr decays to 0 over ``steps``). Default ``"constant"``.
        tol: Stop when the mixed gradient norm is ≤ tol·‖g(μ)‖ (relative, >= 0). With pixels in a box
            the residual rarely gets there (``converged`` false): ``final_rel_grad_norm`` is the measure
            (≤ 0.05 on the reachable target). Default 1e-4.
        source_classes: Draw the starting points (hence the labels) from these classes only; empty:
            every class. Default ``()``.
        class_proportions: One weight per class: draw round(q_k·n) starting points from class k
            (with replacement when a class is short) — the attacker picks the label mix, the labels
            then stay clean; empty: uniform random points. Default ``()``.
        init: The starting points: ``"random"`` clean points; ``"aligned"``: the clean points whose
            gradient at w points most against g(μ); ``"plan"`` (linear softmax victims only):
            random clean points in the label mix of the box-gauge LP's plan over the data's box;
            null: the target maker's plan (``"reachable"``: ``"plan"``) unless ``class_proportions``
            or ``source_classes`` pick the labels, else ``"random"``. Default null.
        gauge: Linear softmax victims: solve the box-gauge LP (well under a second on MNIST) and report
            τ_gauge. Default true.
        radius: L∞ ball around each source input, in the data's units; null: only the data's
            bounds. Default null.
        projection: Algorithm 2, line 7, after every step: ``"box"`` projects the poisons onto the
            data's bounds (and the ``radius`` ball); ``"none"`` takes the steps unprojected, as the
            published script does, so the poisons may leave the data's bounds (the returned set is
            then checked against no box; ``radius`` must be null). Default ``"box"``.
        chunk_size: Points per autograd pass (memory). Default 8192.
        trace_every: Steps between entries of the gradient-norm trace in ``info``. Default 10.
    """

    target: str = "gradpc"
    target_options: GradPCConfig = field(default_factory=GradPCConfig)
    reachable: ReachableConfig = field(default_factory=ReachableConfig)
    params: tuple[str, ...] = ()
    steps: int | None = None
    lr: float | None = None
    optimizer: str = "adam"
    schedule: str = "constant"
    tol: float = 1e-4
    source_classes: tuple[int, ...] = ()
    class_proportions: tuple[float, ...] = ()
    init: str | None = None
    gauge: bool = True
    radius: float | None = None
    projection: str = "box"
    chunk_size: int = 8192
    trace_every: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"{WHAT}: target must be 'gradpc' or a path to a .safetensors file, got {self.target!r}")
        if self.steps is not None:
            check_int(self.steps, "steps", WHAT, minimum=0)
        if self.lr is not None:
            check_number(self.lr, "lr", WHAT)
        check_choice(self.optimizer, "optimizer", ("adam", "normalized"), WHAT)
        check_choice(self.schedule, "schedule", ("constant", "cosine"), WHAT)
        check_number(self.tol, "tol", WHAT, allow_zero=True)
        check_radius(self.radius, WHAT)
        check_choice(self.projection, "projection", PROJECTIONS, WHAT)
        if self.projection == "none" and self.radius is not None:
            raise ConfigError(f"{WHAT}: projection 'none' takes unprojected steps, which ignores an L∞ radius; "
                              "use radius null or projection 'box'")
        if self.init is not None:
            check_choice(self.init, "init", ("random", "aligned", "plan"), WHAT)
        if self.init == "plan" and (self.class_proportions or self.source_classes):
            raise ConfigError(f"{WHAT}: init 'plan' picks the label mix itself; drop class_proportions / source_classes")
        check_int(self.chunk_size, "chunk_size", WHAT)
        check_int(self.trace_every, "trace_every", WHAT)
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in self.source_classes):
            raise ConfigError(f"{WHAT}: source_classes must be class indices, got {self.source_classes!r}")
        if self.class_proportions:
            if self.source_classes:
                raise ConfigError(f"{WHAT}: give source_classes or class_proportions, not both")
            if any(not isinstance(q, (int, float)) or q < 0 for q in self.class_proportions) or sum(self.class_proportions) <= 0:
                raise ConfigError(f"{WHAT}: class_proportions must be non-negative with a positive sum, "
                                  f"got {self.class_proportions!r}")
        if not isinstance(self.target_options, GradPCConfig):
            raise ConfigError(f"{WHAT}: target_options is an option group (GradPC's options); give it as a mapping "
                              f"or as target_options.<option>=value, got {self.target_options!r}")
        if not isinstance(self.reachable, ReachableConfig):
            raise ConfigError(f"{WHAT}: reachable is an option group (the 'reachable' maker's options); give it as a "
                              f"mapping or as reachable.<option>=value, got {self.reachable!r}")
        if self.target == "reachable" and (self.radius is not None or self.params):
            raise ConfigError(f"{WHAT}: target 'reachable' is held to the box gauge of the data's bounds over the full "
                              "gradient [W | b], which ignores an L∞ radius and a params subset; use radius null, params []")
        if self.target != "gradpc" and not is_target_path(self.target):
            from .targets import TARGETS

            TARGETS.get(self.target)  # unknown name -> clear error before any work
        if self.settings().init == "plan" and self.radius is not None:
            raise ConfigError(f"{WHAT}: init 'plan' (the plan of target {self.target!r}) comes from the box gauge of the "
                              "data's bounds, which ignores an L∞ radius; use radius null or set init")

    def settings(self) -> GCSettings:
        """The ``init``, ``steps`` and ``lr`` this run uses: each option that is set; else the target
        maker's :class:`~poisonlab.attacks.targets.GCPlan` (``"reachable"``: plan labels, 600 steps of
        0.05 — what its certificate τ_gauge ≤ 0.8·ε was measured to be reached with); else
        ``"random"``, 300, 0.02. The plan's ``init`` also yields to ``class_proportions`` /
        ``source_classes`` (the caller's own label mix)."""
        plan = maker_plan(self.target)
        own_labels = bool(self.class_proportions or self.source_classes)
        init = self.init if self.init is not None else (plan.init if plan is not None and not own_labels else DEFAULT_INIT)
        steps = self.steps if self.steps is not None else (plan.steps if plan is not None else DEFAULT_STEPS)
        lr = self.lr if self.lr is not None else (plan.lr if plan is not None else DEFAULT_LR)
        used = plan is not None and ((self.init is None and not own_labels) or self.steps is None or self.lr is None)
        return GCSettings(init, steps, lr, f"target {self.target!r}" if used else None)


def sum_gradient(model: nn.Module, names: list[str], w: Params, x: torch.Tensor, y: torch.Tensor, scale: float,
                 chunk: int) -> torch.Tensor:
    """scale·Σ_i ∇_w ℓ(x_i, y_i; w), flattened, in chunks of ``chunk`` points (no graph kept)."""
    loss = functional_loss(model, names)
    total = torch.zeros(sum(p.numel() for p in w), dtype=w[0].dtype, device=w[0].device)
    for s in range(0, len(x), chunk):
        xs, ys = x[s : s + chunk], y[s : s + chunk]
        k = len(xs) * scale
        _, grads = value_and_grad(lambda ps, xb, yb, k=k: loss(ps, xb, yb) * k, w, xs, ys)
        total += flatten(grads)
    return total


def poison_input_gradient(model: nn.Module, names: list[str], w: Params, x: torch.Tensor, y: torch.Tensor,
                          r: torch.Tensor, scale: float, chunk: int) -> torch.Tensor:
    """∂/∂x ⟨scale·Σ_j ∇_w ℓ(x_j, y_j; w), r⟩ (eq. 3.15), one mixed product per chunk."""
    loss = functional_loss(model, names)
    v = unflatten(r, w)
    out = torch.empty_like(x)
    for s in range(0, len(x), chunk):
        xs, ys = x[s : s + chunk], y[s : s + chunk]
        k = len(xs) * scale
        out[s : s + chunk] = mixed_vjp(lambda ps, xb, yb, k=k: loss(ps, xb, yb) * k, w, v, xs.detach(), ys)
    return out


def directional_losses(model: nn.Module, names: list[str], w: Params, x: torch.Tensor, y: torch.Tensor,
                       v: torch.Tensor, chunk: int) -> torch.Tensor:
    """⟨∇_w ℓ(x_i, y_i; w), v⟩ for every point i (N,), by forward-mode differentiation along v."""
    per_point = functional_loss(model, names, reduction="none")
    tangents = unflatten(v, w)
    return torch.cat([directional(per_point, w, tangents, x[s : s + chunk], y[s : s + chunk])
                      for s in range(0, len(x), chunk)])


def _sources_by_proportion(y: torch.Tensor, weights, n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """n source indices, round(q_k·n) from class k (largest remainder), without replacement when possible."""
    if len(weights) != num_classes:
        raise ConfigError(f"{WHAT}: class_proportions needs {num_classes} weights, got {len(weights)}")
    q = torch.tensor([float(v) for v in weights], dtype=torch.float64)
    share = q / q.sum() * n
    counts = share.floor().long()
    rest = n - int(counts.sum())
    if rest:
        counts[torch.argsort(share - counts.double(), descending=True)[:rest]] += 1
    out = []
    for k in range(num_classes):
        if counts[k] == 0:
            continue
        pool = torch.nonzero(y == k).flatten()
        if len(pool) == 0:
            raise ConfigError(f"{WHAT}: class_proportions asks for class {k}, which D_tr does not contain")
        if counts[k] <= len(pool):
            out.append(pool[torch.randperm(len(pool), generator=generator)[: int(counts[k])]])
        else:
            out.append(pool[torch.randint(len(pool), (int(counts[k]),), generator=generator)])
    return torch.cat(out)


def relative_distance(a: nn.Module, b: nn.Module, names: list[str]) -> float:
    """‖w_a − w_b‖ / ‖w_b‖ over the named parameters."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    d = torch.sqrt(cast(torch.Tensor, sum(((pa[n].detach() - pb[n].detach()) ** 2).sum() for n in names)))
    nb = torch.sqrt(cast(torch.Tensor, sum((pb[n].detach() ** 2).sum() for n in names)))
    return float(d / nb.clamp_min(1e-30))


@register_attack("gc")
class GradientCanceling(Attack[GCConfig]):
    clean_label = True
    summary = "Gradient Canceling (model-targeted): poisons that make a target w (GradPC by default) stationary"

    def _target(self, victim: Victim, data: AttackData, progress: bool,
                cache: ArtifactCache | None = None, fraction: float | None = None) -> tuple[nn.Module, dict[str, Any]]:
        c = self.config
        opts = {"gradpc": c.target_options, "reachable": c.reachable}.get(c.target)
        context = TargetContext(data.train, data.bounds, fraction) if fraction is not None else None
        return make_target(c.target, victim.clean_model(), data.val, config_to_dict(opts) if opts is not None else {},
                           progress, cache, context=context)

    def check_supported(self, data: AttackData, victim: Victim) -> None:
        """Any victim and input shape; only ``init="plan"`` and ``target="reachable"`` need a linear
        softmax victim (the box gauge, which both follow, exists for those only) and bounded data."""
        if self.config.target == "reachable":
            check_gauge_applies(victim.spec.build(victim.seed), data.train.input_shape, data.bounds,
                                "gc: target 'reachable'")  # the architecture only: no training
        if self.config.settings().init == "plan":
            model = victim.spec.build(victim.seed)  # the architecture only: no training
            if linear_softmax_names(model, data.train.input_shape) is None:
                raise UnsupportedError(
                    f"gc: init 'plan' follows the box gauge's label plan, which needs a linear softmax victim "
                    f"(logits = W·flatten(x) + b, e.g. 'lr'); {victim.spec.model!r} ({type(model).__name__}) is not one")

    def _admissible(self, x: torch.Tensor, source: torch.Tensor, bounds: Bounds) -> torch.Tensor:
        """Algorithm 2, line 7: the projection onto the admissible inputs — the data's ``bounds`` (and
        the L∞ ball of ``radius`` around each source input); with ``projection: none``, ``x`` as it is."""
        if self.config.projection == "none":
            return x
        return project(x, source, self.config.radius, bounds)

    def _check(self, out: PoisonSet, data: AttackData, n: int) -> PoisonSet:
        """The contract's checks of the returned poisons; with ``projection: none`` against no box
        (leaving the data's bounds is what that option is for), every other check as for any attack."""
        if self.config.projection == "none":
            free = dataclasses.replace(data.train, bounds=Bounds.of((-math.inf, math.inf)))
            data = dataclasses.replace(data, train=free)
        return super()._check(out, data, n)

    def _initial_sources(self, train: Dataset, num_classes: int, n: int, target: nn.Module, names: list[str], w: Params,
                         g_clean: torch.Tensor, generator: torch.Generator, gauge: BoxGauge | None) -> torch.Tensor:
        """Indices into D_tr of the points the poisons start from (Algorithm 2, line 1)."""
        c = self.config
        init = c.settings().init
        if init == "plan":
            if gauge is None:  # _craft solves the gauge whenever init is "plan" and the victim is linear
                raise ConfigError(f"{WHAT}: init 'plan' needs a linear softmax victim (e.g. lr) with all its parameters in params")
            if not math.isfinite(gauge.tau):
                raise ConfigError(f"{WHAT}: init 'plan': no poison mix can cancel this target's gradient (infinite gauge)")
            if gauge.tau > 0:  # τ = 0: the target is already stationary, any labels do
                return _sources_by_proportion(train.y, tuple(gauge.label_mass.tolist()), n, num_classes, generator)
        if c.class_proportions:
            return _sources_by_proportion(train.y, c.class_proportions, n, num_classes, generator)
        if c.source_classes:
            bad = [k for k in c.source_classes if k >= num_classes]
            if bad:
                raise ConfigError(f"{WHAT}: source_classes {bad} out of range 0..{num_classes - 1}")
            pool = torch.nonzero(torch.isin(train.y, torch.tensor(c.source_classes, device=train.y.device))).flatten()
            if len(pool) == 0:
                raise ConfigError(f"{WHAT}: no training points in source_classes {list(c.source_classes)}")
        else:
            pool = torch.arange(len(train), device=train.y.device)
        if init == "aligned" and n <= len(pool):
            device = w[0].device
            score = directional_losses(target, names, w, train.x[pool].to(device), train.y[pool].to(device), g_clean, c.chunk_size)
            return pool[torch.argsort(score.cpu())[:n]]  # most negative ⟨∇ℓ(z_i), g(μ)⟩ first
        if n <= len(pool):
            return pool[torch.randperm(len(pool), generator=generator)[:n]]
        return pool[torch.randint(len(pool), (n,), generator=generator)]

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool,
               cache: ArtifactCache | None = None) -> PoisonSet:
        c = self.config
        run = c.settings()
        t0 = time.perf_counter()
        clean = victim.clean_model()
        target, tinfo = self._target(victim, data, progress, cache, n_poison / len(data.train))
        tinfo = {k: v for k, v in tinfo.items() if k != "loss_trace"}
        try:
            names, w = named_params(target, list(c.params) or None)
        except KeyError as exc:
            raise ConfigError(f"{WHAT}: {exc.args[0]}") from None
        device = w[0].device
        train = data.train
        N = len(train)
        eps = n_poison / N

        # g(μ): the clean mean gradient at the target, fixed during the optimisation
        g_clean = sum_gradient(target, names, w, train.x.to(device), train.y.to(device), 1.0 / N, c.chunk_size)
        g_clean_norm = float(torch.linalg.vector_norm(g_clean))

        # linear softmax victims, inputs free in the data's box: the box-bounded necessary conditions (theory/box.py)
        box, shape = data.bounds, train.input_shape
        linear = linear_gradient_matrix(target, names, g_clean, shape) is not None
        gauge = box_gauge(target, names, g_clean, box, shape) if linear and c.radius is None and (c.gauge or run.init == "plan") else None
        # initialise from clean points (labels kept: clean-label)
        src = self._initial_sources(train, data.num_classes, n_poison, target, names, w, g_clean, generator, gauge)
        y = train.y[src].to(device)
        x = train.x[src].clone().to(device)

        def residual(xp: torch.Tensor) -> torch.Tensor:
            return g_clean + sum_gradient(target, names, w, xp, y, 1.0 / N, c.chunk_size)

        x_var = x.clone().requires_grad_(True)  # the poison inputs being optimised
        opt = torch.optim.Adam([x_var], lr=run.lr) if c.optimizer == "adam" else None
        trace: list[list[float]] = []
        best_x, best_norm = x_var.detach().clone(), math.inf
        converged, step = False, 0
        bar = tqdm(range(run.steps + 1), desc="gc", disable=not progress, leave=False)
        for step in bar:
            r = residual(x_var.detach())
            norm = float(torch.linalg.vector_norm(r)) / (1.0 + eps)  # gradient norm over D_tr ∪ D_p
            if not math.isfinite(norm):
                raise DivergenceError(f"{WHAT}: the objective became non-finite at step {step} (lr {run.lr}): lower lr (-A lr=...)")
            if norm < best_norm:
                best_x, best_norm = x_var.detach().clone(), norm
            if step % c.trace_every == 0 or step == run.steps:
                trace.append([step, norm / max(g_clean_norm, 1e-30)])
                bar.set_postfix(rel_grad=f"{norm / max(g_clean_norm, 1e-30):.3g}")
            if norm <= c.tol * g_clean_norm:
                converged = True
                break
            if step == run.steps:
                break
            lr = run.lr if c.schedule == "constant" else 0.5 * run.lr * (1 + math.cos(math.pi * step / run.steps))
            grad = poison_input_gradient(target, names, w, x_var.detach(), y, r, 1.0 / N, c.chunk_size)
            with torch.no_grad():
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = lr
                    x_var.grad = grad
                    opt.step()
                else:
                    rms = grad.pow(2).mean().sqrt().clamp_min(1e-30)
                    x_var -= lr * grad / rms
                x_var.copy_(self._admissible(x_var, x, box))
        if trace and trace[-1][0] != step:
            trace.append([step, norm / max(g_clean_norm, 1e-30)])

        logits = predict_logits(target, train.x)
        reach = multiclass_reachability(logits, train.y)
        tau_count = min_poison_count(reach.tau, N, reach.attained)
        info = {
            "target": c.target,
            "target_info": tinfo,
            # what this run used: the options given, else the target maker's plan (plan_from), else gc's defaults
            "settings": {"init": run.init, "steps": run.steps, "lr": run.lr},
            "plan_from": run.plan_from,
            "gc_params": list(names),
            "projection": c.projection,
            "target_val_accuracy": accuracy(target, data.val),
            "clean_val_accuracy": accuracy(clean, data.val),
            "clean_to_target_distance": relative_distance(clean, target, names),
            "tau": reach.tau,
            "tau_min_poisons": tau_count if math.isfinite(tau_count) else None,
            # linear softmax victims, inputs free in the data's box: the box-bounded necessary condition (theory/box.py)
            **box_report(target, names, g_clean, box, shape, radius=c.radius, gauge=gauge, solve_gauge=False),
            "eps_reaches_tau_gauge": eps >= gauge.tau if gauge is not None else None,
            "eps": eps,
            "eps_reaches_tau": reach.reachable(eps),
            "clean_grad_norm": g_clean_norm,
            "initial_rel_grad_norm": trace[0][1] if trace else float("nan"),
            "final_rel_grad_norm": best_norm / max(g_clean_norm, 1e-30),
            "final_grad_norm": best_norm,
            "converged": converged,
            "steps_run": step,
            "grad_norm_trace": trace,
            "gc_seconds": time.perf_counter() - t0,
        }
        state = {k: v.detach().cpu().contiguous() for k, v in target.state_dict().items()}
        return PoisonSet(best_x.cpu(), y.cpu(), src, info, {"target": state})

    def assess(self, poisons: PoisonSet, retrained: nn.Module, test: Dataset) -> dict[str, Any]:
        """Did retraining reach the target? Distance to w and accuracy/agreement vs the target's."""
        state = poisons.states.get("target")
        if state is None:
            return {}
        target = copy.deepcopy(retrained)
        target.load_state_dict(state)
        names = poisons.info.get("gc_params") or [n for n, _ in target.named_parameters()]
        ht, hr = predict_logits(target, test.x), predict_logits(retrained, test.x)
        pt, pr = ht.argmax(1), hr.argmax(1)
        # softmax ignores a common shift of the logits (and the last layer a common row), so parameter
        # distance is not identifiable; centred logits on the test set are
        ct, cr = ht - ht.mean(1, keepdim=True), hr - hr.mean(1, keepdim=True)
        logit_dist = float((cr - ct).norm() / ct.norm().clamp_min(1e-30))
        d_clean = poisons.info.get("clean_to_target_distance", float("nan"))
        d = relative_distance(retrained, target, names)
        return {
            "target_test_accuracy": accuracy(target, test),
            "retrained_to_target_distance": d,
            "target_distance_closed": 1.0 - d / d_clean if d_clean and math.isfinite(d_clean) else float("nan"),
            "retrained_target_agreement": 100.0 * float((pt == pr).double().mean()),
            "retrained_to_target_logit_distance": logit_dist,
        }
