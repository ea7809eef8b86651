"""Back-gradient poisoning (Muñoz-González, Biggio et al. 2017) as k-step unrolled GDA (thesis §2.4.2).

Threat model: indiscriminate, training-only. The attacker adds ε·N points whose *images* it
optimises directly (initialised from D_tr points; images or any other input shape); labels are set once at the start (``labels``:
``flip`` y ← C−1−y as in the original attack, ``keep`` for a clean-label variant, or
``max_loss``). Each round, with the follower at w_t:

    w_{t,k}  = k plain SGD steps of f(x_p, ·) from w_t        (unrolled, differentiable)
    x_p     ← Π_box( x_p + α · sign ∇_{x_p} ℓ(w_{t,k}) )     (ℓ = CE on a D_v batch; hypergradient
                                                             by reverse mode through the k steps)
    w_{t+1}  = w_t − β ∇_w f(x_p, w_t)   (n times)             (UGDA follower, Metz et al. 2017)

The original back-gradient reverses the k steps with O(1) memory by reversible learning; we
store the k steps instead (exact same hypergradient for the small k used here). Poisons are
processed ≈ε·B per clean batch of B, all of them every epoch, instead of one point at a time.
Π_box is the projection onto the data's bounds (``data.bounds``; pixels in [0, 1] for images) and α
is in the data's units. The follower's steps are plain SGD; another victim recipe (Adam, momentum, a
schedule) is approximated, as ``info["follower"]`` says. Any victim module works.
Shapes: inputs (N, *input_shape) inside the bounds, poisons (ε·N, *input_shape).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import torch

from ..cache import ArtifactCache, tensor_fingerprint
from ..data.types import AttackData, PoisonSet
from ..training.victim import Victim
from ..validation import check_choice, check_int, check_number
from . import _bilevel as B
from .base import Attack, AttackConfig, register_attack

WHAT = "attack 'back_gradient'"


@dataclass(frozen=True, kw_only=True)
class BackGradientConfig(AttackConfig):
    """Options of :class:`BackGradient` (see the module docstring).

    Attributes:
        epochs: Passes over D_tr; each poison is updated once per pass (an integer >= 0). Default 10.
        k: Unrolled follower SGD steps in the hypergradient. Default 10.
        n: Follower steps per round (UGDA; 0: the follower stays at the clean victim). Default 1.
        leader_lr: α, the signed step on the poison inputs, in the data's units. Default 0.02.
        follower_lr: β, the follower's (and the unrolled steps') SGD step; null: the victim recipe's
            learning rate. Default null.
        batch_size: Clean D_tr points per round; null: the victim recipe's batch size. Default null.
        val_batch_size: D_v points in the leader's loss per round; null: all of D_v. Default 1000.
        labels: The poisons' labels, set once: ``"flip"`` (y ← C−1−y, the original attack),
            ``"keep"`` (clean-label) or ``"max_loss"`` (the class the clean model finds least
            likely). Default ``"flip"``.
        dtype: Working precision, ``"float32"`` or ``"float64"``. Default ``"float32"``.
        checkpoint: Resumable checkpoints (:class:`~poisonlab.attacks._bilevel.CheckpointConfig`;
            the former ``checkpoint: DIR`` still works). Default its defaults (none).
    """

    RENAMED: ClassVar[Mapping[str, str]] = {"checkpoint": "checkpoint.dir"}

    epochs: int = 10
    k: int = 10
    n: int = 1
    leader_lr: float = 0.02
    follower_lr: float | None = None
    batch_size: int | None = None
    val_batch_size: int | None = 1000
    labels: str = "flip"
    dtype: str = "float32"
    checkpoint: B.CheckpointConfig = field(default_factory=B.CheckpointConfig)

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", WHAT, minimum=0)
        check_int(self.k, "k", WHAT)
        check_int(self.n, "n", WHAT, minimum=0)
        check_number(self.leader_lr, "leader_lr", WHAT)
        if self.follower_lr is not None:
            check_number(self.follower_lr, "follower_lr", WHAT)
        for key in ("batch_size", "val_batch_size"):
            if getattr(self, key) is not None:
                check_int(getattr(self, key), key, WHAT)
        check_choice(self.labels, "labels", B.LABEL_RULES, WHAT)
        B.check_dtype(self.dtype, WHAT)
        B.check_group(self.checkpoint, B.CheckpointConfig, "checkpoint", WHAT)


def unrolled_hypergradient(fol: B.Follower, w: B.Params, xc: torch.Tensor, yc: torch.Tensor, xp: torch.Tensor,
                           yp: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, *, k: int, lr: float) -> torch.Tensor:
    """∇_{x_p} ℓ(w_k(x_p)) where w_k = k SGD steps on f = CE(clean ∪ poisons) from ``w``."""
    xp = xp.detach().requires_grad_(True)
    with torch.enable_grad():
        wk = B.sgd_steps(lambda ws: fol.mixed_loss(ws, xc, yc, xp, yp), tuple(p.detach() for p in w), fol.step_sizes(lr), k,
                         create_graph=True)
        return torch.autograd.grad(fol.loss(wk, xv, yv), xp)[0]


@register_attack("back_gradient")
class BackGradient(Attack):
    Config = BackGradientConfig
    summary = "poison images by k-step unrolled gradient ascent on the validation loss (Muñoz-González et al. 2017)"

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator,
               progress: bool, cache: ArtifactCache | None = None) -> PoisonSet:
        cfg: BackGradientConfig = self.config
        base, T, fol, w_pre, yp_all, beta, bs = B.direct_setup(cfg, data, victim, n_poison, generator)
        follower = B.follower_note(victim.spec.recipe, beta, WHAT)

        def leader_step(w: B.Params, r: B.Round, xp: torch.Tensor) -> torch.Tensor:
            g = unrolled_hypergradient(fol, w, T.train.x[r.clean], T.train.y[r.clean], xp, yp_all[r.poison],
                                       T.val.x[r.val], T.val.y[r.val], k=cfg.k, lr=beta)
            return xp + cfg.leader_lr * g.sign()

        resumable = {k: v for k, v in self.options().items() if k not in ("epochs", "checkpoint")}
        fp = B.fingerprint("back_gradient", resumable, n_poison, len(T.val), base,
                           tensor_fingerprint(data.train.x, data.train.y, data.val.x, data.val.y), victim.spec.model,
                           *B.bounds_key(data.bounds))
        x, info = B.direct_game(name="back_gradient", fol=fol, w_pre=w_pre, T=T, y_poison=yp_all,
                                leader_step=leader_step, epochs=cfg.epochs, n=cfg.n, follower_lr=beta,
                                batch_size=bs, val_batch_size=cfg.val_batch_size, base_seed=base,
                                checkpoint=B.Checkpoint.of(cfg.checkpoint, fp), progress=progress)
        info["follower"] = follower
        return PoisonSet(x.to("cpu", torch.float32), yp_all.cpu(), T.source_index, info)
