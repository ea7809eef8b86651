"""A victim is a *spec* — architecture + training recipe — not a trained object.

Bilevel attacks and the test stage retrain it; :class:`Victim` adds the clean-trained weights of
stage 1 so attacks can warm-start from them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..data.types import Dataset
from ..models.victims import build_victim
from ..seeding import derive_seed, torch_generator
from .loop import TrainConfig, resolve_device, train


@dataclass(frozen=True)
class VictimSpec:
    """Architecture name + options + recipe + the data shape it is built for."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    recipe: TrainConfig = field(default_factory=TrainConfig)
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int) -> nn.Module:
        """A freshly initialised network; its initial weights depend only on ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init"))
            model = build_victim(self.model, self.input_shape, self.num_classes, **self.options)
        return model.to(resolve_device(self.recipe.device))

    def train(self, data: Dataset, seed: int, *, progress: bool | str = False, sample_weight: torch.Tensor | None = None) -> nn.Module:
        """Train from scratch with the recipe. Same seed => same init and same batch order."""
        model = self.build(seed)
        return train(model, data, self.recipe, torch_generator(seed, "batches"), progress=progress, sample_weight=sample_weight)


@dataclass(frozen=True)
class Victim:
    """What an attacker may know about the victim: its spec, the training seed and (optionally)
    the clean-trained parameters of stage 1 (``clean_state``)."""

    spec: VictimSpec
    seed: int
    clean_state: dict[str, torch.Tensor] | None = None

    def clean_model(self) -> nn.Module:
        """A copy of the clean-trained network (or a fresh one when no clean state is known)."""
        model = self.spec.build(self.seed)
        if self.clean_state is not None:
            model.load_state_dict(copy.deepcopy(self.clean_state))
        return model.eval()

    def retrain(self, data: Dataset, *, progress: bool | str = False) -> nn.Module:
        return self.spec.train(data, self.seed, progress=progress)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.spec.recipe.device)


def input_shape_of(data: Dataset) -> Sequence[int]:
    return tuple(data.x.shape[1:])
