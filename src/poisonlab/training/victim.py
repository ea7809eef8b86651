"""A victim is a *spec* — architecture + training recipe — not a trained object.

Bilevel attacks and the test stage retrain it; :class:`Victim` adds the clean-trained weights of
stage 1 so attacks can warm-start from them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from ..data.types import Dataset
from ..errors import ConfigError
from ..models.victims import build_victim
from ..seeding import derive_seed, seeded_rng, torch_generator
from .loop import TrainConfig, resolve_device, train

#: a zero-argument callable that returns a freshly initialised ``nn.Module`` (the user's own architecture)
ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class VictimSpec:
    """Architecture + options + recipe + the data shape it is built for.

    ``model`` is a registered architecture name (``"lr"``, ``"nn"``, ...; built for ``input_shape``
    and ``num_classes``) or, when ``factory`` is given, a label for the user's own architecture:
    ``factory()`` must return a fresh ``nn.Module`` mapping inputs (N, *input_shape) to logits
    (N, num_classes). :meth:`for_data` fills in the shape and classes of a dataset.

    Attributes:
        model: Registered architecture name ("lr", "nn", "cnn", "resnet18",
            ``linear_probe:<extractor>``, ``fine_tune:<extractor>``), or with ``factory`` a free
            label for the user's architecture (shown in logs and records). Required, no default.
        input_shape: Shape of one input, without the batch dimension ((d,) tabular, (C, H, W)
            images), or None (default) until :meth:`for_data` binds the spec to a dataset;
            :meth:`build` needs it.
        num_classes: Number of classes (logits) the network outputs, or None (default) until
            :meth:`for_data`; :meth:`build` needs it.
        recipe: The training recipe (optimiser, learning rate, epochs, batch size, device), a
            :class:`~poisonlab.training.loop.TrainConfig`. Default ``TrainConfig()``: the
            thesis' plain SGD, lr 0.1, 100 epochs, the dataset's batch size.
        options: Keyword options of the registered architecture (e.g. ``{"hidden": [256]}`` for
            "nn"), passed to its builder; unused with ``factory``. Default {} (the architecture's
            defaults).
        factory: A zero-argument callable returning a freshly initialised ``nn.Module`` (the
            user's own architecture; called under a seeded RNG so its initial weights depend only
            on the seed), or None (default) to build the registered ``model``.
    """

    model: str
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    recipe: TrainConfig = field(default_factory=TrainConfig)
    options: dict[str, Any] = field(default_factory=dict)
    factory: ModelFactory | None = None

    @property
    def is_custom(self) -> bool:
        """True for a user-defined module (``factory``), False for a registered architecture."""
        return self.factory is not None

    def for_data(self, input_shape: tuple[int, ...], num_classes: int, default_batch_size: int | None = None) -> "VictimSpec":
        """This spec bound to a dataset's input shape and classes (and its default batch size when the
        recipe leaves ``batch_size=None``)."""
        recipe = self.recipe
        if recipe.batch_size is None and default_batch_size is not None:
            recipe = replace(recipe, batch_size=int(default_batch_size))
        return replace(self, input_shape=tuple(int(s) for s in input_shape), num_classes=int(num_classes), recipe=recipe)

    def build(self, seed: int) -> nn.Module:
        """A freshly initialised network; its initial weights depend only on ``seed``."""
        if self.input_shape is None or self.num_classes is None:
            raise ConfigError("victim spec is not bound to a dataset (call for_data(input_shape, num_classes))")
        with seeded_rng(derive_seed(seed, "init")):
            if self.factory is not None:
                model = self.factory()
                if not isinstance(model, nn.Module):
                    raise ConfigError(f"victim factory {self.model!r} must return a torch.nn.Module, got {type(model).__name__}")
            else:
                model = build_victim(self.model, self.input_shape, self.num_classes, **self.options)
        return model.to(resolve_device(self.recipe.device))

    def train(self, data: Dataset, seed: int, *, progress: bool | str = False, sample_weight: torch.Tensor | None = None) -> nn.Module:
        """Train from scratch with the recipe. Same seed => same init and same batch order."""
        model = self.build(seed)
        return train(model, data, self.recipe, torch_generator(seed, "batches"), progress=progress, sample_weight=sample_weight)


@dataclass(frozen=True)
class Victim:
    """What an attacker may know about the victim: its spec, the training seed and (optionally)
    the clean-trained parameters of stage 1 (``clean_state``).

    Attributes:
        spec: The victim's architecture and training recipe, a :class:`VictimSpec` bound to the
            data (``input_shape`` and ``num_classes`` set). Required, no default.
        seed: Training seed, an integer: the network's initial weights and the batch order of
            every (re)training derive from it, so the same seed gives the same init and batches.
            Required, no default.
        clean_state: The ``state_dict`` (parameter name -> tensor) of the victim trained on the
            clean D_tr in stage 1, which attacks may warm-start from (:meth:`clean_model`), or
            None (default) when it is not known (then :meth:`clean_model` is a fresh network).
    """

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

