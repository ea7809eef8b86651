"""Min-max poisoning (Steinhardt, Koh & Liang 2017), the zero-sum reduction (thesis eq. 2.2).

Threat model: indiscriminate, training-only; the attacker adds ε·N points and solves
max_{D_p} min_w L(D_tr ∪ D_p, w) — leader and follower share the training loss (ℓ = f), so no
validation set and no implicit gradient is needed: at a stationary follower the total gradient
reduces to the direct one ∇_{x_p} f. Adapted from the original online SVM algorithm to neural
networks and batches: poison images are initialised from D_tr points with labels chosen once
(``labels="max_loss"``: the class the clean model finds least likely, the analogue of picking the
highest-loss feasible label; or ``flip`` / ``keep``), then each round

    x_p ← Π_box( x_p + α · sign ∇_{x_p} CE(w; x_p, y_p) )   (m times, the round's ≈ε·B poisons)
    w   ← w − β ∇_w f(D_batch ∪ x_p, w)                        (n times)

The feasible set is the data's box (``data.bounds``: pixels in [0, 1] for images, per-feature
ranges for tabular data; no data-sanitisation sphere, which the thesis' protocol does not use); α
is in the data's units. The follower takes plain SGD steps; another victim recipe (Adam, momentum,
a schedule) is approximated and said so in ``info["follower"]``. Works on any victim module and
any input shape (N, *input_shape).
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

WHAT = "attack 'min_max'"


@dataclass(frozen=True, kw_only=True)
class MinMaxConfig(AttackConfig):
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
        checkpoint: Resumable checkpoints (:class:`~poisonlab.attacks._bilevel.CheckpointConfig`;
            the former ``checkpoint: DIR`` still works). Default its defaults (none).
    """

    RENAMED: ClassVar[Mapping[str, str]] = {"checkpoint": "checkpoint.dir"}

    epochs: int = 10
    m: int = 1
    n: int = 1
    leader_lr: float = 0.05
    follower_lr: float | None = None
    batch_size: int | None = None
    labels: str = "max_loss"
    dtype: str = "float32"
    checkpoint: B.CheckpointConfig = field(default_factory=B.CheckpointConfig)

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", WHAT, minimum=0)
        check_int(self.m, "m", WHAT)
        check_int(self.n, "n", WHAT, minimum=0)
        check_number(self.leader_lr, "leader_lr", WHAT)
        if self.follower_lr is not None:
            check_number(self.follower_lr, "follower_lr", WHAT)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", WHAT)
        check_choice(self.labels, "labels", B.LABEL_RULES, WHAT)
        B.check_dtype(self.dtype, WHAT)
        B.check_group(self.checkpoint, B.CheckpointConfig, "checkpoint", WHAT)


@register_attack("min_max")
class MinMax(Attack):
    Config = MinMaxConfig
    summary = "zero-sum max_{D_p} min_w L(D_tr ∪ D_p): poisons ascend the follower's training loss (Steinhardt et al. 2017)"

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator,
               progress: bool, cache: ArtifactCache | None = None) -> PoisonSet:
        cfg: MinMaxConfig = self.config
        base, T, fol, w_pre, yp_all, beta, bs = B.direct_setup(cfg, data, victim, n_poison, generator)
        follower = B.follower_note(victim.spec.recipe, beta, WHAT)

        def leader_step(w: B.Params, r: B.Round, xp: torch.Tensor) -> torch.Tensor:
            yp = yp_all[r.poison]
            for _ in range(cfg.m):
                x = xp.detach().requires_grad_(True)
                with torch.enable_grad():
                    g = torch.autograd.grad(fol.loss(w, x, yp), x)[0]
                xp = T.train.bounds.clamp(x + cfg.leader_lr * g.sign()).detach()
            return xp

        resumable = {k: v for k, v in self.options().items() if k not in ("epochs", "checkpoint")}
        fp = B.fingerprint("min_max", resumable, n_poison, base,
                           tensor_fingerprint(data.train.x, data.train.y, data.val.x, data.val.y), victim.spec.model,
                           *B.bounds_key(data.bounds))
        x, info = B.direct_game(name="min_max", fol=fol, w_pre=w_pre, T=T, y_poison=yp_all,
                                leader_step=leader_step, epochs=cfg.epochs, n=cfg.n, follower_lr=beta,
                                batch_size=bs, val_batch_size=1, base_seed=base,
                                checkpoint=B.Checkpoint.of(cfg.checkpoint, fp), progress=progress)
        info["follower"] = follower
        return PoisonSet(x.to("cpu", torch.float32), yp_all.cpu(), T.source_index, info)
