"""What the ART detector defenses (``art_activation``, ``art_spectral``) share.

* :class:`ArtDefense` — a :class:`Defense` whose construction fails with
  :class:`~poisonlab.errors.UnsupportedError` (install hint included) when ART is missing
* :func:`art_view` — the trained victim wrapped in ART's ``PyTorchClassifier`` so that ART's
  "last layer" (the one its detectors read) is the representation poisonlab's defenses use; its
  :meth:`ArtView.shifted` makes ART read that representation minus an offset (``art_spectral``
  uses it to hand ART class-centred representations)
* :func:`numpy_seeded` — ART's clustering (scikit-learn k-means / PCA without a ``random_state``)
  draws from numpy's global generator; this seeds it from the defense's generator and restores it

Which layer ART reads. ART's ``PyTorchClassifier`` takes the *top-level children* of the model as
its layers and both detectors read the output of the last one. For poisonlab's victims
(``features`` then ``head``) that would be the logits. With ``layer="penultimate"`` (the default)
the model is wrapped so that the input of its classification head — ``model.head`` when the model
has ``features`` and ``head`` submodules, else its last ``nn.Linear`` (for ``lr`` that is the
flattened input) — passes through an identity layer registered last, so ART reads the penultimate
features, the representation poisonlab's own ``spectral`` defense uses. A model without an
``nn.Linear`` falls back to ART's default. ``layer="art"`` always uses ART's default (the output of
the model's last top-level child; the logits for poisonlab's victims).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, TypeVar

import numpy as np
import torch
from torch import nn

from ..data.types import Dataset
from ..errors import ConfigError, UnsupportedError
from ..models.art import art_classifier, require_art
from ._grads import head_module
from .base import Defense, DefenseConfig

LAYERS = ("penultimate", "art")


@dataclass(frozen=True, kw_only=True)
class ArtDetectorConfig(DefenseConfig):
    """``layer``: "penultimate" (the head's input; see the module docstring) or "art" (ART's default).

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points to remove (by global rank of the scores), in [0, 1]. Default 0.03.
        layer: Which representation ART's detector reads: "penultimate" (default) — the input of
            the victim's classification head, the representation of poisonlab's ``spectral``; "art"
            — ART's own choice, the output of the model's last top-level child (the logits for
            poisonlab's victims).
    """

    layer: str = "penultimate"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer not in LAYERS:
            raise ConfigError(f"art detectors: layer must be one of {list(LAYERS)}, got {self.layer!r}")


#: an ART defense's config type (``ArtDefense[ArtSpectralConfig]``)
AC = TypeVar("AC", bound=ArtDetectorConfig)


class ArtDefense(Defense[AC]):
    """A defense that runs one of ART's poison detectors; needs ART at construction."""

    def __init__(self, config: DefenseConfig | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        require_art(f"defense {self.name!r}")

    def check_supported(self, data: Dataset, victim: Any) -> None:
        """ART reads one layer of the model: the head's input (``layer="penultimate"``) or the output of
        the model's last submodule; a model with neither cannot be read (checked on a fresh, untrained
        victim, before any work)."""
        model = victim.spec.build(victim.seed)
        if (self.config.layer != "penultimate" or _head(model) is None) and not list(model.children()):
            raise UnsupportedError(f"defense {self.name!r}: ART's detectors read a layer of the model; "
                                   f"{type(model).__name__} has no submodules and no nn.Linear head")


class _Tapped(nn.Module):
    """``model`` unchanged, plus an identity layer registered after it that the head's input is
    routed through (by a pre-hook installed by :func:`art_view`): ART's last layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = model
        self.penultimate = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _head(model: nn.Module) -> nn.Module | None:
    """The classification head (:func:`poisonlab.defenses._grads.head_module`, the one head finder), or None."""
    try:
        return head_module(model)[1]
    except UnsupportedError:
        return None


@dataclass
class ArtView:
    """A trained model as ART sees it: ``classifier`` (ART ``PyTorchClassifier``), ``layer`` (the
    representation used: "penultimate" or "art"), ``module`` (the module whose output ART reads)."""

    classifier: Any
    layer: str
    module: nn.Module

    @property
    def last_layer(self) -> int:
        """The layer index ART's detectors read (its last)."""
        return len(self.classifier.layer_names) - 1

    @contextlib.contextmanager
    def shifted(self, offset: torch.Tensor) -> Iterator[None]:
        """While inside, ART reads the representation minus ``offset`` (shape of one activation)."""
        def hook(_m: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
            return out - offset.to(out.device, out.dtype)

        handle = self.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()


@contextlib.contextmanager
def art_view(model: nn.Module, data: Dataset, layer: str) -> Iterator[ArtView]:
    """``model`` as ART sees it, with ART's last layer the representation chosen by ``layer`` (module
    docstring). Every hook put on the model is removed on exit."""
    model.eval()
    head = _head(model) if layer == "penultimate" else None
    if head is None:
        children = list(model.children())
        if not children:
            raise UnsupportedError(f"ART's detectors read a layer of the model; {type(model).__name__} has no "
                                   "submodules and no nn.Linear head")
        yield ArtView(art_classifier(model, data.input_shape, data.num_classes, data.bounds), "art", children[-1])
        return
    tapped = _Tapped(model)
    handle = head.register_forward_pre_hook(lambda _m, args: (tapped.penultimate(args[0]), *args[1:]))
    try:
        yield ArtView(art_classifier(tapped, data.input_shape, data.num_classes, data.bounds), "penultimate",
                      tapped.penultimate)
    finally:
        handle.remove()


def art_inputs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """``x`` as the contiguous numpy array ART feeds to ``model`` (the model's float dtype)."""
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return np.ascontiguousarray(x.detach().to("cpu", dtype).numpy())


def one_hot(y: torch.Tensor, num_classes: int) -> np.ndarray:
    """ART's label format: one-hot float32 (N, num_classes)."""
    out = np.zeros((len(y), num_classes), dtype=np.float32)
    out[np.arange(len(y)), y.cpu().numpy()] = 1.0
    return out


@contextlib.contextmanager
def numpy_seeded(generator: torch.Generator) -> Iterator[None]:
    """Seed numpy's global generator from one draw of ``generator``; restore its state on exit."""
    state = np.random.get_state()
    np.random.seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item()))
    try:
        yield
    finally:
        np.random.set_state(state)
