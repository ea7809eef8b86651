"""Label flip (Biggio et al. 2011; thesis Table 2.2).

Threat model: the attacker adds ε·N copies of training points with wrong labels; inputs are
unchanged. ``mode="rule"`` flips y ← (C − 1) − y (the thesis' 10 − y, kept in range);
``mode="random"`` draws a uniformly random *different* label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cache import ArtifactCache
from ..data.types import AttackData, PoisonSet
from ..training.victim import Victim
from ..validation import check_choice
from .base import Attack, AttackConfig, register_attack


@dataclass(frozen=True, kw_only=True)
class LabelFlipConfig(AttackConfig):
    """Options of :class:`LabelFlip`.

    Attributes:
        mode: ``"rule"`` (y ← C−1−y, the thesis' 10 − y kept in range) or ``"random"`` (a uniformly
            drawn other label). Default ``"rule"``.
    """

    mode: str = "rule"

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", ("rule", "random"), "attack 'label_flip'")


@register_attack("label_flip")
class LabelFlip(Attack[LabelFlipConfig]):
    summary = "copies of ε·N training points with flipped labels (rule y←C−1−y or random)"

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool,
               cache: ArtifactCache | None = None) -> PoisonSet:
        c = data.num_classes
        src = torch.randperm(len(data.train), generator=generator, device=generator.device)[:n_poison]
        # fraction <= 1, so n_poison <= |D_tr|: distinct sources
        y = data.train.y[src]
        if self.config.mode == "rule":
            new = (c - 1) - y
        else:
            new = (y + torch.randint(1, c, (n_poison,), generator=generator, device=generator.device).to(y.device)) % c
        return PoisonSet(data.train.x[src].clone(), new, src)
