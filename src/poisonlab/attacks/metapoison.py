"""MetaPoison (Huang, Geiping, Fowl, Taylor & Goldstein 2020), adapted to indiscriminate poisoning.

Threat model: clean-label, training-only. The attacker adds ε·N copies of D_tr points with
their labels kept and a perturbation δ, ‖δ‖_∞ ≤ ``radius`` (in the data's units), x_p = Π_box(x⁰ + δ)
inside the data's bounds (``data.bounds``: pixels in [0, 1] for images; infinite bounds leave only
the ball).
As in the thesis (§2.6.1) the targeted objective is replaced by *maximising the validation
loss* ℓ = CE(D_v). Meta-learning with an ensemble of ``ensemble`` victims trained to staggered
stages (initialised with different seeds, model i pre-trained for ⌊i·T/M⌋ of ``stagger_epochs``
epochs on D_tr ∪ D_p): each of the ``outer_steps`` steps

    for each model w_i:   w_i,K = K unrolled steps of the victim's optimiser on f from w_i
                          (differentiable in δ; from model i's optimiser state, left unchanged)
    δ ← Π( δ + Adam( ∇_δ mean_i ℓ(w_i,K) ) )
    every model then takes one ordinary step of that optimiser on D_tr ∪ D_p (the ensemble keeps
    training; a model that reaches ``stagger_epochs`` epochs restarts from a fresh initialisation)

f uses a clean batch of B points plus all poisons weighted ε: f = (CE_clean + ε·CE_poison)/(1+ε),
the expected loss of a batch of D_tr ∪ D_p. Paper defaults: K = 2, 60 outer steps, 24 models.
Each model trains with the victim recipe's optimiser
(:class:`~poisonlab.attacks.bilevel.FollowerOptimizer`: SGD with momentum / Nesterov / weight
decay, Adam, AdamW; its own state per model, reset on a restart), as the paper's ensemble trains with
the victim's; a learning-rate schedule is approximated by the base rate, as ``info["follower"]``
says. For a plain-SGD recipe these are exactly the plain SGD steps of before. Any victim module and
input shape works.
Defaults and a negative drop: on MNIST LR at ε = 3 % the defaults *raise* the accuracy a little,
and on digits LR they drop one test image's worth (measured: docs/studies/table-2-2.md,
docs/studies/attack-defaults.md). The perturbation is clean-label and L∞-bounded by 8/255.
Against a convex victim retrained from scratch, 3 % of correctly labelled, nearly clean points act
as extra clean data. This matches the thesis, which reports no MNIST LR cell for MetaPoison. The
defaults are kept as the paper's; a damaging setting for convex victims has not been found.

Shapes: inputs (N, *input_shape) inside the bounds, δ (ε·N, *input_shape).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import torch
from tqdm.auto import tqdm

from ..autodiff import Params
from ..cache import ArtifactCache
from ..data.types import AttackData, PoisonSet
from ..errors import ConfigError
from ..seeding import derive_seed, device_generator, draw_seed, torch_generator
from ..training.victim import Victim
from ..validation import check_int, check_radius
from . import bilevel as B
from ._radius import clamp_box
from .base import Attack, AttackConfig, register_attack
from .bilevel import FollowerOptimizer

WHAT = "attack 'metapoison'"


@dataclass(frozen=True, kw_only=True)
class MetaPoisonConfig(AttackConfig):
    """Options of :class:`MetaPoison` (see the module docstring; paper defaults).

    Attributes:
        outer_steps: Meta-gradient steps on δ (an integer >= 0). Default 60.
        unroll: K, the unrolled optimiser steps of each model per meta-gradient. Default 2.
        ensemble: M, the number of staggered models. Default 24.
        stagger_epochs: The ensemble spans training stages 0 .. stagger_epochs epochs on D_tr ∪ D_p;
            a model that reaches it restarts from a fresh initialisation. Default 10.
        radius: The L∞ bound on δ, in the data's units (> 0; δ is always bounded). Default 8/255.
        leader_lr: Adam's step on δ, in the data's units. Default 0.01.
        follower_lr: The models' learning rate; null: the victim recipe's. Default null.
        batch_size: Clean D_tr points in each model's batch; null: the victim recipe's batch size.
            Default null.
        val_batch_size: D_v points in the meta-loss per outer step; null: all of D_v. Default 1000.
        dtype: Working precision, ``"float32"`` or ``"float64"``. Default ``"float32"``.
    """

    outer_steps: int = 60
    unroll: int = 2
    ensemble: int = 24
    stagger_epochs: int = 10
    radius: float = 8 / 255
    leader_lr: float = 0.01
    follower_lr: float | None = None
    batch_size: int | None = None
    val_batch_size: int | None = 1000
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for key in ("outer_steps", "stagger_epochs"):
            check_int(getattr(self, key), key, WHAT, minimum=0)
        for key in ("unroll", "ensemble"):
            check_int(getattr(self, key), key, WHAT)
        if self.radius is None:  # δ is always L∞-bounded here (the attack's threat model)
            raise ConfigError(f"{WHAT}: radius must be a finite number > 0 (in the data's units, e.g. 8/255 for "
                              "pixels in [0, 1]); metapoison's δ is always bounded")
        check_radius(self.radius, WHAT)
        B.check_steps(self, WHAT)


@register_attack("metapoison")
class MetaPoison(Attack[MetaPoisonConfig]):
    clean_label = True
    summary = "clean-label δ by K-step unrolled meta-gradients over a staggered ensemble (Huang et al. 2020)"

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator,
               progress: bool, cache: ArtifactCache | None = None) -> PoisonSet:
        cfg: MetaPoisonConfig = self.config
        dtype, device = B.DTYPES[cfg.dtype], victim.device
        base = draw_seed(generator)
        T = B.AttackTensors.build(data, B.draw_sources(len(data.train), n_poison, generator), device, dtype)
        eps = n_poison / len(T.train)
        beta = cfg.follower_lr if cfg.follower_lr is not None else victim.spec.recipe.lr
        follower = B.follower_note(victim.spec.recipe, beta, WHAT, modelled=True)
        box = T.train.bounds
        bs = cfg.batch_size or victim.spec.recipe.batch_size or len(T.train)
        steps_per_epoch = max(1, -(-len(T.train) // bs))
        horizon = cfg.stagger_epochs * steps_per_epoch  # SGD steps at which a model restarts
        g = device_generator(torch_generator(base, "metapoison"), device)  # batches drawn on the device

        def fresh(i: int, restart: int) -> tuple[B.Follower, FollowerOptimizer, Params]:
            fol, w = B.Follower.from_model(victim.spec.build(derive_seed(base, f"mp-model-{i}-{restart}")), dtype)
            return fol, FollowerOptimizer.for_recipe(victim.spec.recipe, fol.step_sizes(beta)), w

        def batch_loss(fol: B.Follower, w: Params, xp: torch.Tensor) -> torch.Tensor:
            idx = torch.randint(0, len(T.train), (bs,), generator=g, device=g.device)
            return fol.weighted_mixed_loss(w, T.train.x[idx], T.train.y[idx], xp, T.y0, eps)

        delta = torch.zeros_like(T.x0)
        models, ages, restarts = [], [], [0] * cfg.ensemble
        for i in range(cfg.ensemble):  # staggered pretraining on D_tr ∪ D⁰_p
            fol, fopt, w = fresh(i, 0)
            age = (i * horizon) // cfg.ensemble
            for _ in range(age):
                w = B.follower_steps(fopt, partial(batch_loss, fol, xp=T.x0), w, 1)
            models.append((fol, fopt, w))
            ages.append(age)
        opt = torch.optim.Adam([delta.requires_grad_(True)], lr=cfg.leader_lr)
        info: dict = {"val_loss": [], "ensemble": cfg.ensemble, "follower": follower}
        val_loss: list[torch.Tensor] = []  # read on the host once, after the loop
        t0 = time.perf_counter()
        for _ in tqdm(range(cfg.outer_steps), desc="metapoison", disable=not progress, unit="step"):
            v = torch.randperm(len(T.val), generator=g, device=g.device)[: cfg.val_batch_size or len(T.val)]
            xv, yv = T.val.x[v], T.val.y[v]
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), dtype=dtype, device=device)
            for fol, fopt, w in models:
                with torch.enable_grad():
                    xp = clamp_box(T.x0 + delta, box)  # in the graph: clamp's gradient
                    wk = B.follower_lookahead(fopt, partial(batch_loss, fol, xp=xp), w, cfg.unroll)
                    ell = fol.loss(wk, xv, yv) / len(models)
                    (-ell).backward()  # ascent on the validation loss
                total = total + ell.detach()
            opt.step()
            with torch.no_grad():
                delta.clamp_(-cfg.radius, cfg.radius)
                delta.copy_(box.clamp(T.x0 + delta) - T.x0)
            val_loss.append(total)
            xp_now = box.clamp(T.x0 + delta.detach())
            for i, (fol, fopt, w) in enumerate(models):  # the ensemble keeps training on the current poisons
                if ages[i] + 1 >= horizon:
                    restarts[i] += 1
                    models[i], ages[i] = fresh(i, restarts[i]), 0
                    continue
                models[i] = (fol, fopt, B.follower_steps(fopt, partial(batch_loss, fol, xp=xp_now), w, 1))
                ages[i] += 1
        info["val_loss"] = torch.stack(val_loss).tolist() if val_loss else []
        info["seconds"] = time.perf_counter() - t0
        info["seconds_per_outer_step"] = info["seconds"] / max(cfg.outer_steps, 1)
        x = box.clamp(T.x0 + delta.detach())
        return PoisonSet(x.to("cpu", torch.float32), T.y0.cpu(), T.source_index, info)
