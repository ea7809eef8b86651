"""Gradient matching for indiscriminate poisoning (Geiping et al. 2021, "Witches' brew"; adapted to
availability attacks by Fowl et al. 2021; thesis §2.4 (3) "fixed follower" and the comparison in §3.6).

Threat model: indiscriminate, training-only, clean-label, additive (or ``injection="replace"``).
The attacker knows D_tr, D_v, the victim's architecture and its clean-trained weights w (the
follower is *fixed* at w: no retraining is simulated). It picks n = ε·N source points (x⁰_j, y_j)
of D_tr at random, keeps their labels and perturbs their inputs, x_j = x⁰_j + δ_j, inside the data's
bounds (``data.bounds``: [0, 1] for pixels, per-feature ranges for tabular data) and, with
``radius``, inside the L∞ ball ‖δ_j‖_∞ ≤ radius (in the data's units, e.g. 8/255 for pixels). The
poisons' training gradient at w,

    g_p(δ) = (1/n) Σ_j ∇_w ℓ(w; x⁰_j + δ_j, y_j),

is made to point along a *target gradient* g_t — the direction the attacker wants a training step
to move against — by minimising the cosine dissimilarity

    S(δ) = 1 − ⟨g_p(δ), g_t⟩ / (‖g_p(δ)‖ ‖g_t‖)        over the feasible δ.

As the clean gradient at a trained w is ≈ 0, the mixed training gradient on D_tr ∪ D_p is ≈ ε·g_p, so
training steps then follow −g_t. Targets (``target``):

* ``"reverse"`` (default): g_t = ∇_w of a reversed loss on D_v at w (``reverse_loss``):
  ``"negative_ce"`` (default) ℓ̄ = −CE, i.e. g_t = −∇_w CE(D_v), so training on the poisons ascends
  the validation loss; ``"reversed_ce"`` ℓ̄ = −log(1 − p_y(x)) (Fowl et al.'s reversed
  cross-entropy, thesis §3.6), whose descent pushes the true class's probability down. Measured on
  sklearn digits with LR (5 seeds, ε = 0.1 / 0.3) negative_ce dropped the accuracy by 1.0 / 2.5
  points on average, reversed_ce by −0.4 / −0.2; on MNIST LR at ε = 3 % both by < 0.1 although
  the cosine reached 0.9998 — a gradient matched at the clean model moves little at a small ε.
* ``"gradpc"`` (or a ``.safetensors`` path): a target model w_tar from
  :func:`poisonlab.attacks.targets.make_target` (GradPC with the option group ``target_options``,
  as in ``gc``; through the cache), and g_t = w − w_tar, so a training step moves towards w_tar.

Optimisation as in Witches' brew: ``restarts`` independent runs (the first from δ = 0, the others
from uniform noise of L∞ size ``radius`` or, without a radius, ``init_scale``), each of ``steps``
*signed Adam* steps (Adam fed sign ∇_δ S) of learning rate ``lr`` (the data's units), divided by 10
at 3/8, 5/8 and 5/6 of the steps (``schedule="multistep"``; or ``"constant"``), projecting onto
the feasible set after every step; the feasible iterate of lowest S over all restarts is returned.
∇_δ S is one mixed second-order product (``gc.poison_input_gradient``) per chunk of
``chunk_size`` poisons. ``info`` records the cosine similarity along the best restart
(``cosine_trace``), its first and last values and every restart's best.

Works on any victim module and input shape (N, *input_shape) whose loss can be differentiated twice
(parameters, then inputs). ``params`` restricts the matched gradient to some parameter tensors
(default all trainable ones).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..autodiff import flatten, functional_loss, functional_model, named_params, value_and_grad
from ..cache import ArtifactCache
from ..data.types import AttackData, PoisonSet
from ..errors import ConfigError, DivergenceError
from ..options import config_to_dict
from ..seeding import draw_seed, torch_generator
from ..training import Victim, accuracy
from ..validation import check_choice, check_int, check_number, check_radius
from ._radius import project
from .base import Attack, AttackConfig, register_attack
from .gc import poison_input_gradient, sum_gradient
from .gradpc import GradPCConfig
from .i_min_max import check_input_gradient
from .targets import is_target_path, make_target

WHAT = "attack 'gradient_matching'"
REVERSE_LOSSES = ("reversed_ce", "negative_ce")
SCHEDULES = ("multistep", "constant")


@dataclass(frozen=True, kw_only=True)
class GradientMatchingConfig(AttackConfig):
    """Options (see the module docstring). Target: ``target`` ("reverse", "gradpc" or a path to a
        .safetensors model), ``reverse_loss`` ("negative_ce" | "reversed_ce") for "reverse"; GradPC's
        own options, the group ``target_options``, for "gradpc" (as in ``gc``: ``-A target_options.eps_w=0.1``).
        Matching: ``params`` (parameter tensors of the gradient; default all), ``steps`` signed-Adam
        steps per restart, ``lr`` (the data's units), ``schedule`` ("multistep" | "constant"),
        ``restarts``, ``radius`` (L∞ ball around each source, the data's units; None: the bounds only),
        ``init_scale`` (L∞ size of the random start of restarts ≥ 1 when radius is None),
        ``chunk_size`` (poisons per autograd pass), ``trace_every`` (steps between trace entries).

    Attributes:
        target: The target gradient to match: ``"reverse"`` (the gradient of a reversed validation loss, so
            training on the poisons ascends it), ``"gradpc"`` (the direction from the clean weights to a GradPC
            target) or a ``.safetensors`` target model. Default ``"reverse"``.
        reverse_loss: With ``target="reverse"``: ``"negative_ce"`` (−cross-entropy) or ``"reversed_ce"``
            (−log(1 − p_y), the thesis' reversed loss). Default ``"negative_ce"``.
        target_options: GradPC's options when ``target`` is ``"gradpc"``
            (:class:`~poisonlab.attacks.gradpc.GradPCConfig`: ``-A target_options.eps_w=0.1``).
            Default its defaults (ε_w = 0.5, 50 steps).
        params: Names of the parameters whose gradient is matched (``()``: every trainable parameter). Default ``()``.
        steps: Signed-Adam steps on the perturbations δ per restart (Witches' brew). Default ``240``.
        lr: Adam step size on δ, in the data's units. Default ``0.01``.
        schedule: Step-size schedule: ``"multistep"`` (÷10 at 3/8, 5/8 and 5/6 of the steps) or ``"constant"``. Default ``"multistep"``.
        restarts: Restarts: the first from δ = 0, the others from random δ of size ``radius`` (or
            ``init_scale``); the best feasible iterate over all is returned. Default ``8``.
        radius: Optional L∞ bound on δ around each source, in the data's units (``None``: only the data's bounds). Default ``None``.
        init_scale: Size of the random initial δ of restarts 2… when ``radius`` is ``None``, in the data's units. Default ``0.05``.
        chunk_size: Points per chunk when summing per-sample gradients (memory bound). Default ``8192``.
        trace_every: Steps between recorded cosine similarities in ``info``. Default ``10``.
    """

    target: str = "reverse"
    reverse_loss: str = "negative_ce"
    target_options: GradPCConfig = field(default_factory=GradPCConfig)
    params: tuple[str, ...] = ()
    steps: int = 240
    lr: float = 0.01
    schedule: str = "multistep"
    restarts: int = 8
    radius: float | None = None
    init_scale: float = 0.05
    chunk_size: int = 8192
    trace_every: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"{WHAT}: target must be 'reverse', 'gradpc' or a path to a .safetensors file, "
                              f"got {self.target!r}")
        if self.target not in ("reverse",) and not is_target_path(self.target):
            from .targets import TARGETS

            TARGETS.get(self.target)  # an unknown target name fails before any work
        check_choice(self.reverse_loss, "reverse_loss", REVERSE_LOSSES, WHAT)
        check_int(self.steps, "steps", WHAT, minimum=0)
        check_number(self.lr, "lr", WHAT)
        check_choice(self.schedule, "schedule", SCHEDULES, WHAT)
        check_int(self.restarts, "restarts", WHAT)
        check_radius(self.radius, WHAT)
        check_number(self.init_scale, "init_scale", WHAT, allow_zero=True)
        check_int(self.chunk_size, "chunk_size", WHAT)
        check_int(self.trace_every, "trace_every", WHAT)
        if not isinstance(self.params, (tuple, list)) or not all(isinstance(p, str) for p in self.params):
            raise ConfigError(f"{WHAT}: params must be a list of parameter names, got {self.params!r}")
        if not isinstance(self.target_options, GradPCConfig):
            raise ConfigError(f"{WHAT}: target_options is an option group (GradPC's options); give it as a mapping "
                              f"or as target_options.<option>=value, got {self.target_options!r}")


def reversed_loss_gradient(model: nn.Module, names: list[str], w: tuple[torch.Tensor, ...], x: torch.Tensor,
                           y: torch.Tensor, kind: str, chunk: int) -> torch.Tensor:
    """∇_w of the mean reversed loss over (x, y), flattened: ``reversed_ce`` −log(1 − p_y) =
    logsumexp(z) − logsumexp_{k≠y}(z) (computed stably), or ``negative_ce`` −CE."""
    logits = functional_model(model, names)
    ce = functional_loss(model, names, reduction="sum")
    n = len(x)

    def reversed_loss(ps, xs, ys):
        if kind == "reversed_ce":
            z = logits(ps, xs)
            others = z.masked_fill(F.one_hot(ys, z.shape[1]).bool(), float("-inf"))
            return (torch.logsumexp(z, 1) - torch.logsumexp(others, 1)).sum() / n
        return -ce(ps, xs, ys) / n

    total = torch.zeros(sum(p.numel() for p in w), dtype=w[0].dtype, device=w[0].device)
    for s in range(0, n, chunk):
        total += flatten(value_and_grad(reversed_loss, w, x[s : s + chunk], y[s : s + chunk])[1])
    return total


def _lr_at(cfg: GradientMatchingConfig, step: int) -> float:
    if cfg.schedule == "constant":
        return cfg.lr
    drops = sum(step >= m for m in (3 * cfg.steps / 8, 5 * cfg.steps / 8, 5 * cfg.steps / 6))
    return cfg.lr * 0.1 ** drops


@register_attack("gradient_matching")
class GradientMatching(Attack[GradientMatchingConfig]):
    clean_label = True
    summary = ("gradient matching (Witches' brew / Fowl et al. 2021, indiscriminate): clean-label δ whose training "
               "gradient at the clean model aligns with a reversed-loss (or target-model) gradient")

    def check_supported(self, data: AttackData, victim: Victim) -> None:
        """Any victim whose loss has a gradient with respect to its (float) inputs (checked on one
        point with the untrained architecture; no training)."""
        check_input_gradient(data, victim, WHAT)

    def _target_gradient(self, clean: nn.Module, names: list[str], w: tuple[torch.Tensor, ...], data: AttackData,
                         progress: bool, cache: ArtifactCache | None) -> tuple[torch.Tensor, dict[str, Any], dict]:
        c = self.config
        device = w[0].device
        if c.target == "reverse":
            g = reversed_loss_gradient(clean, names, w, data.val.x.to(device, w[0].dtype), data.val.y.to(device),
                                       c.reverse_loss, c.chunk_size)
            return g, {"reverse_loss": c.reverse_loss}, {}
        opts = config_to_dict(c.target_options) if c.target == "gradpc" else {}
        target, tinfo = make_target(c.target, clean, data.val, opts, progress, cache)
        tp = dict(target.named_parameters())
        w_flat = flatten(w)
        g = w_flat - flatten([tp[n].detach().to(device, w_flat.dtype) for n in names])
        tinfo = {k: v for k, v in tinfo.items() if k != "loss_trace"}
        tinfo["target_val_accuracy"] = accuracy(target, data.val)
        state = {k: v.detach().cpu().contiguous() for k, v in target.state_dict().items()}
        return g, tinfo, {"target": state}

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool,
               cache: ArtifactCache | None = None) -> PoisonSet:
        c = self.config
        t0 = time.perf_counter()
        base = draw_seed(generator)
        src = torch.randperm(len(data.train), generator=generator, device=generator.device)[:n_poison]
        clean = victim.clean_model()
        try:
            names, w = named_params(clean, list(c.params) or None)
        except KeyError as exc:
            raise ConfigError(f"{WHAT}: {exc.args[0]}") from None
        device, dtype = w[0].device, w[0].dtype
        g_t, tinfo, states = self._target_gradient(clean, names, w, data, progress, cache)
        g_t_norm = float(torch.linalg.vector_norm(g_t))
        if not math.isfinite(g_t_norm) or g_t_norm == 0:
            raise ConfigError(f"{WHAT}: the target gradient is zero or not finite; nothing to match")
        bounds = data.bounds
        x0 = data.train.x[src].to(device, dtype)
        y = data.train.y[src].to(device)
        scale = 1.0 / n_poison

        def cosine_and_grad(x: torch.Tensor, with_grad: bool) -> tuple[float, torch.Tensor | None]:
            g_p = sum_gradient(clean, names, w, x, y, scale, c.chunk_size)
            gn = torch.linalg.vector_norm(g_p).clamp_min(1e-30)
            cos = float(g_p @ g_t) / (float(gn) * g_t_norm)
            if not with_grad:
                return cos, None
            r = -(g_t / (gn * g_t_norm) - cos * g_p / gn**2)  # ∂S/∂g_p, S = 1 − cos
            return cos, poison_input_gradient(clean, names, w, x, y, r, scale, c.chunk_size)

        noise_gen = torch_generator(base, "gradient_matching-restarts")
        a = c.radius if c.radius is not None else c.init_scale
        best_x, best_cos, best_restart, best_trace = x0.clone(), -math.inf, 0, []
        restart_best: list[float] = []
        initial_cos = cosine_and_grad(x0, False)[0]
        bar = tqdm(total=c.restarts * c.steps, desc="gradient_matching", disable=not progress, leave=False)
        for k in range(c.restarts):
            if k == 0 or a == 0:
                x = x0.clone()
            else:
                u = torch.rand(x0.shape, generator=noise_gen, dtype=torch.float32, device=noise_gen.device).to(device, dtype)
                x = project(x0 + a * (2 * u - 1), x0, c.radius, bounds)
            delta = (x - x0).clone().requires_grad_(True)
            opt = torch.optim.Adam([delta], lr=c.lr)
            trace: list[list[float]] = []
            k_best_x, k_best = x.clone(), -math.inf
            for step in range(c.steps + 1):
                x = x0 + delta.detach()
                cos, grad = cosine_and_grad(x, step < c.steps)
                if not math.isfinite(cos):
                    raise DivergenceError(f"{WHAT}: the cosine became non-finite at restart {k}, step {step} (lr {c.lr}): "
                                          "lower lr (-A lr=...)")
                if cos > k_best:
                    k_best_x, k_best = x.clone(), cos
                if step % c.trace_every == 0 or step == c.steps:
                    trace.append([step, cos])
                if step == c.steps:
                    break
                for group in opt.param_groups:
                    group["lr"] = _lr_at(c, step)
                assert grad is not None  # asked for at every step but the last
                delta.grad = grad.sign()  # signed Adam (Witches' brew)
                opt.step()
                with torch.no_grad():
                    delta.copy_(project(x0 + delta, x0, c.radius, bounds) - x0)
                bar.update(1)
                bar.set_postfix(cos=f"{cos:.3f}", restart=k)
            restart_best.append(k_best)
            if k_best > best_cos:
                best_x, best_cos, best_restart, best_trace = k_best_x, k_best, k, trace
        bar.close()
        best_x = project(best_x, x0, c.radius, bounds)  # exact: the stored iterate already was feasible
        info = {
            "target": c.target,
            "target_info": tinfo,
            "gm_params": list(names),
            "target_grad_norm": g_t_norm,
            "initial_cosine": initial_cos,  # at the clean sources (δ = 0)
            "final_cosine": best_cos,
            "cosine_trace": best_trace,  # [step, cosine] along the best restart
            "best_restart": best_restart,
            "restart_best_cosines": restart_best,
            "max_perturbation": float((best_x - x0).abs().max()) if n_poison else 0.0,
            "seconds": time.perf_counter() - t0,
        }
        return PoisonSet(best_x.to("cpu", torch.float32), y.cpu(), src, info, states)
