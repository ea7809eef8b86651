"""Back-gradient poisoning (Muñoz-González, Biggio et al. 2017) as k-step unrolled GDA (thesis §2.4.2).

Threat model: indiscriminate, training-only. The attacker adds ε·N points whose *images* it
optimises directly (initialised from D_tr points; images or any other input shape); labels are set once at the start (``labels``:
``flip`` y ← C−1−y as in the original attack, ``keep`` for a clean-label variant, or
``max_loss``). Each round, with the follower at w_t:

    w_{t,k}  = k steps of the victim's optimiser on f(x_p, ·) from w_t   (unrolled, differentiable)
    x_p     ← Π_box( x_p + α · sign ∇_{x_p} ℓ(w_{t,k}) )     (ℓ = CE on a D_v batch; hypergradient
                                                             by reverse mode through the k steps)
    w_{t+1}  = n steps of the victim's optimiser on f(x_p, ·)    (UGDA follower, Metz et al. 2017)

The original back-gradient reverses the k steps with O(1) memory by reversible learning; we
store the k steps instead (exact same hypergradient for the small k used here). Poisons are
processed ≈ε·B per clean batch of B, all of them every epoch, instead of one point at a time.
Π_box is the projection onto the data's bounds (``data.bounds``; pixels in [0, 1] for images) and α
is in the data's units. The follower's steps — the unrolled ones and the round's — are those of the
victim recipe's optimiser (:class:`~poisonlab.attacks.bilevel.FollowerOptimizer`: SGD with
momentum / Nesterov / weight decay, Adam, AdamW, with their state carried across rounds; the unrolled
look-ahead starts from that state and leaves it unchanged); a learning-rate schedule is approximated
by the base rate, as ``info["follower"]`` says. For a plain-SGD recipe these are exactly the plain
SGD steps of before. Any victim module works.
Shapes: inputs (N, *input_shape) inside the bounds, poisons (ε·N, *input_shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..autodiff import Params
from ..cache import ArtifactCache
from ..data.types import AttackData, PoisonSet
from ..training.victim import Victim
from ..validation import check_int
from . import bilevel as B
from .base import Attack, register_attack
from .bilevel import FollowerOptimizer

WHAT = "attack 'back_gradient'"


@dataclass(frozen=True, kw_only=True)
class BackGradientConfig(B.DirectGameConfig):
    """Options of :class:`BackGradient` (see the module docstring).

    Attributes:
        epochs: Passes over D_tr; each poison is updated once per pass (an integer >= 0). Default 50
            (on MNIST LR at ε = 3 % it drops far more than the former 10; measured:
            docs/studies/table-2-2.md).
        k: Unrolled follower steps in the hypergradient. Default 10.
        n: Follower steps per round (UGDA; 0: the follower stays at the clean victim). Default 1.
        leader_lr: α, the signed step on the poison inputs, in the data's units. Default 0.02.
        follower_lr: β, the follower's (and the unrolled steps') learning rate; null: the victim
            recipe's learning rate. Default null.
        batch_size: Clean D_tr points per round; null: the victim recipe's batch size. Default null.
        val_batch_size: D_v points in the leader's loss per round; null: all of D_v. Default 1000.
        labels: The poisons' labels, set once: ``"flip"`` (y ← C−1−y, the original attack),
            ``"keep"`` (clean-label) or ``"max_loss"`` (the class the clean model finds least
            likely). Default ``"flip"``.
        dtype: Working precision, ``"float32"`` or ``"float64"``. Default ``"float32"``.
        checkpoint: Resumable checkpoints (:class:`~poisonlab.attacks.bilevel.CheckpointConfig`:
            ``-A checkpoint.dir=DIR``). Default its defaults (none).
    """

    WHAT: ClassVar[str] = WHAT

    epochs: int = 50
    k: int = 10
    leader_lr: float = 0.02
    val_batch_size: int | None = 1000
    labels: str = "flip"

    def __post_init__(self) -> None:
        super().__post_init__()  # the shared options (and val_batch_size)
        check_int(self.k, "k", WHAT)


def unrolled_hypergradient(fol: B.Follower, opt: FollowerOptimizer, w: Params, xc: torch.Tensor, yc: torch.Tensor,
                           xp: torch.Tensor, yp: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, *,
                           k: int) -> torch.Tensor:
    """∇_{x_p} ℓ(w_k(x_p)) where w_k = k steps of the recipe's optimiser ``opt`` (from its current
    state, which is left unchanged) on f = CE(clean ∪ poisons) from ``w``."""
    xp = xp.detach().requires_grad_(True)
    with torch.enable_grad():
        wk = B.follower_lookahead(opt, lambda ws: fol.mixed_loss(ws, xc, yc, xp, yp), tuple(p.detach() for p in w), k)
        return torch.autograd.grad(fol.loss(wk, xv, yv), xp)[0]


@register_attack("back_gradient")
class BackGradient(Attack[BackGradientConfig]):
    summary = "poison images by k-step unrolled gradient ascent on the validation loss (Muñoz-González et al. 2017)"

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator,
               progress: bool, cache: ArtifactCache | None = None) -> PoisonSet:
        cfg: BackGradientConfig = self.config

        def leader_step(s: B.DirectSetup, w: Params, r: B.Round, xp: torch.Tensor) -> torch.Tensor:
            T = s.T
            g = unrolled_hypergradient(s.fol, s.fopt, w, T.train.x[r.clean], T.train.y[r.clean], xp,
                                       s.y_poison[r.poison], T.val.x[r.val], T.val.y[r.val], k=cfg.k)
            return xp + cfg.leader_lr * g.sign()

        # |D_v| in the key: the fingerprint of the checkpoints made before
        return B.direct_attack("back_gradient", cfg, data, victim, n_poison, generator, leader_step,
                               val_batch_size=cfg.val_batch_size, key=(len(data.val),), progress=progress)
