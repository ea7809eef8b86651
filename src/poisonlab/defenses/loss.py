"""Loss defense (Koh, Steinhardt & Liang 2022, "Stronger data poisoning attacks break data
sanitization defenses"; thesis Table 2.10).

Threat model: the defender trains the victim on the whole (poisoned) set D and removes the points
with the largest training loss — poisons that contradict the clean data tend to be fitted badly.
Score of point i: ℓ(f_ŵ(x_i), y_i) (cross-entropy), ŵ trained on D. Shapes: x (N, *input_shape) → (N,).
Any victim module (only its forward pass is used), inputs of any shape and bounds.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.types import Dataset
from ..training.victim import Victim
from ._grads import per_sample_losses
from .base import Defense, DefenseConfig, register_defense


@register_defense("loss")
class LossDefense(Defense[DefenseConfig]):
    summary = "remove the points with the largest loss under the victim trained on D (Koh et al. 2022)"

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> torch.Tensor:
        trained = self.trained_model(data, victim, model, progress)
        return per_sample_losses(trained, data.x, data.y)
