"""Min-max poisoning (Steinhardt, Koh & Liang 2017), the zero-sum reduction (thesis eq. 2.2).

Threat model: indiscriminate, training-only; the attacker adds ε·N points and solves
max_{D_p} min_w L(D_tr ∪ D_p, w) — leader and follower share the training loss (ℓ = f), so no
validation set and no implicit gradient is needed: at a stationary follower the total gradient
reduces to the direct one ∇_{x_p} f. Adapted from the original online SVM algorithm to neural
networks and batches: poison images are initialised from D_tr points with labels chosen once
(``labels="max_loss"``: the class the clean model finds least likely, the analogue of picking the
highest-loss feasible label; or ``flip`` / ``keep``), then each round

    x_p ← Π_box( x_p + α · sign ∇_{x_p} CE(w; x_p, y_p) )   (m times, the round's ≈ε·B poisons)
    w   ← w − β ∇_w f(D_batch ∪ x_p, w)                        (n times; the recipe's optimiser)

The feasible set is the data's box (``data.bounds``: pixels in [0, 1] for images, per-feature
ranges for tabular data; no data-sanitisation sphere, which the thesis' protocol does not use); α
is in the data's units. The follower takes the victim recipe's optimiser (SGD with momentum / weight
decay, Adam, AdamW, its state carried across rounds; the update above is the plain-SGD case); a
schedule is approximated by the base rate and said so in ``info["follower"]``. Works on any victim
module and any input shape (N, *input_shape).
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

WHAT = "attack 'min_max'"


@dataclass(frozen=True, kw_only=True)
class MinMaxConfig(B.DirectGameConfig):
    """Options of :class:`MinMax` (see the module docstring).

    Attributes:
        epochs: Passes over D_tr (an integer >= 0). Default 10.
        m: Leader (signed ascent) steps on the round's poisons per round. Default 1.
        n: Follower SGD steps per round (0: the follower stays at the clean victim). Default 1.
        leader_lr: α, the signed step on the poison inputs, in the data's units. Default 0.05.
        follower_lr: β, the follower's SGD step; null: the victim recipe's learning rate. Default null.
        batch_size: Clean D_tr points per round; null: the victim recipe's batch size. Default null.
        labels: The poisons' labels, set once: ``"max_loss"`` (the class the clean model finds
            least likely), ``"flip"`` (y ← C−1−y) or ``"keep"``. Default ``"max_loss"``.
        dtype: Working precision, ``"float32"`` or ``"float64"``. Default ``"float32"``.
        checkpoint: Resumable checkpoints (:class:`~poisonlab.attacks.bilevel.CheckpointConfig`:
            ``-A checkpoint.dir=DIR``). Default its defaults (none).
    """

    WHAT: ClassVar[str] = WHAT

    m: int = 1
    leader_lr: float = 0.05
    labels: str = "max_loss"

    def __post_init__(self) -> None:
        super().__post_init__()  # the shared options
        check_int(self.m, "m", WHAT)


@register_attack("min_max")
class MinMax(Attack[MinMaxConfig]):
    summary = "zero-sum max_{D_p} min_w L(D_tr ∪ D_p): poisons ascend the follower's training loss (Steinhardt et al. 2017)"

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator,
               progress: bool, cache: ArtifactCache | None = None) -> PoisonSet:
        cfg: MinMaxConfig = self.config

        def leader_step(s: B.DirectSetup, w: Params, r: B.Round, xp: torch.Tensor) -> torch.Tensor:
            yp = s.y_poison[r.poison]
            for _ in range(cfg.m):
                x = xp.detach().requires_grad_(True)
                with torch.enable_grad():
                    g = torch.autograd.grad(s.fol.loss(w, x, yp), x)[0]
                xp = s.T.train.bounds.clamp(x + cfg.leader_lr * g.sign()).detach()
            return xp

        # the leader reads no D_v: one (unused) validation index a round
        return B.direct_attack("min_max", cfg, data, victim, n_poison, generator, leader_step, val_batch_size=1,
                               progress=progress)
