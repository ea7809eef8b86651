"""Any poisonlab attack as an ART poisoning attack: :class:`PoisonlabAttack`.

>>> from poisonlab.interop.art import PoisonlabAttack                      # doctest: +SKIP
>>> attack = PoisonlabAttack("label_flip", classifier, 0.1, recipe={"epochs": 20})
>>> x_poison, y_poison = attack.poison(x_train, y_train)                   # ART's call
>>> x_all, y_all = np.concatenate([x_train, x_poison]), np.concatenate([y_train, y_poison])

Importing this module needs ART (``pip install 'poisonlab[art]'``); without it the import raises
:class:`~poisonlab.errors.UnsupportedError`. It drives poisonlab's public API
(:func:`poisonlab.data_from_arrays`, :func:`poisonlab.victim`, :func:`poisonlab.poison`).

What ``poison(x, y)`` returns. ART's attacks return "a poisoned version of x"; poisonlab's attacks
*add* points to a training set. ``poison`` returns **only the crafted poison points**, ART-style as
a pair ``(x_poison, y_poison)``: ``poison_count(fraction, |D_tr|)`` = round(``fraction`` · |D_tr|)
points (halves up; the attack may craft fewer if its own contract says so). The poisoned training
set is ``x`` (or D_tr) plus these points. ``x_poison`` has the shape and float dtype of ``x`` and lies
inside the classifier's ``clip_values``; ``y_poison`` is in the encoding ``y`` came in: index labels
(N,) or (N, 1), or one-hot (N, C), with ``y``'s dtype.

The attacker's data. Without ``x_val``, ``x`` is split like :func:`poisonlab.data_from_arrays`
splits arrays (seeded by ``seed``): D_tr = 70 %, the attacker's validation set D_v = 30 %, and the
budget counts D_tr. With ``x_val``/``y_val``, all of ``x`` is D_tr and ``(x_val, y_val)`` is D_v.
Attacks that pick a target from a test set pick it from D_v. After a call, :attr:`data_` holds the
:class:`~poisonlab.data.types.ExperimentData` used and :attr:`poisons_` the poisonlab
:class:`~poisonlab.data.types.PoisonSet` (its ``source`` indexes ``data_.train``, i.e. ``x`` itself
when ``x_val`` is given).

The victim. The victim poisonlab's attacks (re)train is the classifier's architecture trained
from scratch: its factory deep-copies ``classifier.model`` and calls ``reset_parameters()`` on
every submodule that has one (so the trained weights of the classifier are not the starting point;
a module without ``reset_parameters`` keeps its copied weights). ``recipe`` holds the keyword
arguments of :func:`poisonlab.victim` (``optimizer``, ``lr``, ``epochs``, ``batch_size``, ...);
``{}`` / ``None`` means poisonlab's defaults, except the device: without a ``device`` key the victim
trains on the classifier's device (``classifier.device``, e.g. ``cuda:0``). The classifier's bounds are its ``clip_values``
(``None``: unbounded). A classifier with non-trivial preprocessing (a mean/std other than 0/1, or
preprocessing defences) is refused: poisonlab trains ``classifier.model`` on raw inputs.

Base class. The attack needs the classifier's model (architecture), so it is an ART
``PoisoningAttackWhiteBox`` (ART's base for poisoning attacks with access to the classifier; its
``PoisoningAttackBlackBox`` takes no classifier) and declares ART's estimator requirements for a
PyTorch neural-network classifier.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..data.types import Dataset
from ..errors import ConfigError, UnsupportedError
from . import bounds_from_clip_values, require_art

require_art("poisonlab.interop.art")

from art.attacks.attack import PoisoningAttackWhiteBox  # noqa: E402
from art.estimators import BaseEstimator, NeuralNetworkMixin  # noqa: E402
from art.estimators.classification.classifier import ClassifierMixin  # noqa: E402
from art.estimators.classification.pytorch import PyTorchClassifier  # noqa: E402


def fresh_model_factory(model: nn.Module):
    """A zero-argument factory: a deep copy of ``model`` with ``reset_parameters()`` called on every
    submodule that has it (a freshly initialised network of the same architecture)."""

    def build() -> nn.Module:
        fresh = copy.deepcopy(model)
        for sub in fresh.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
        return fresh

    return build


def _is_identity(op: Any) -> bool:
    mean, std = getattr(op, "mean", None), getattr(op, "std", None)
    if mean is None or std is None:
        return False
    return bool(np.all(np.asarray(mean) == 0) and np.all(np.asarray(std) == 1))


def _label_encoding(y: np.ndarray, n: int) -> str:
    if len(y) != n:
        raise ConfigError(f"PoisonlabAttack: {len(y)} labels for {n} inputs")
    if y.ndim == 1:
        return "index"
    if y.ndim == 2 and y.shape[1] == 1:
        return "column"
    if y.ndim == 2:
        return "one-hot"
    raise ConfigError(f"PoisonlabAttack: labels must be (N,), (N, 1) or one-hot (N, C), got shape {y.shape}")


def _indices(y: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "one-hot":
        return np.argmax(y, axis=1).astype(np.int64)
    return np.asarray(y).reshape(-1)


def _encode(labels: np.ndarray, encoding: str, like: np.ndarray, num_classes: int) -> np.ndarray:
    if encoding == "one-hot":
        return np.eye(like.shape[1] if like.ndim == 2 else num_classes, dtype=like.dtype)[labels]
    out = labels.astype(like.dtype)
    return out[:, None] if encoding == "column" else out


class PoisonlabAttack(PoisoningAttackWhiteBox):
    """A poisonlab attack as an ART poisoning attack; see the module docstring.

    Args:
        attack: a registered poisonlab attack name (``poisonlab list``), e.g. ``"label_flip"``, or a
            poisonlab ``Attack`` object (then no ``options``).
        classifier: an ART ``PyTorchClassifier``; its ``model`` is the architecture, its
            ``clip_values`` the bounds, its ``nb_classes`` the number of classes.
        fraction: the poison budget as a fraction of |D_tr| (see the module docstring).
        x_val: inputs of the attacker's validation set D_v (then all of ``x`` is D_tr).
        y_val: labels of D_v (index or one-hot), with ``x_val``.
        recipe: keyword arguments of :func:`poisonlab.victim` (the victim's training recipe).
        seed: the seed of the split and of the attack.
        progress: show poisonlab's progress bars.
        **options: the attack's options (as in ``poisonlab.poison(..., options=...)``).
    """

    attack_params = PoisoningAttackWhiteBox.attack_params + [
        "attack", "fraction", "recipe", "seed", "progress", "options",
    ]
    _estimator_requirements = (BaseEstimator, NeuralNetworkMixin, ClassifierMixin, PyTorchClassifier)

    def __init__(self, attack: Any, classifier: PyTorchClassifier, fraction: float, *, x_val: Any = None,
                 y_val: Any = None, recipe: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = False,
                 **options: Any) -> None:
        super().__init__(classifier=classifier)
        self.attack = attack
        self.fraction = fraction
        self.x_val = x_val
        self.y_val = y_val
        self.recipe = dict(recipe or {})
        self.seed = seed
        self.progress = progress
        self.options = dict(options)
        self.data_: Any = None
        self.poisons_: Any = None
        self._check_params()

    def _check_params(self) -> None:
        super()._check_params()
        from ..attacks import Attack, build_attack
        from ..data.splits import check_fraction

        if isinstance(self.attack, str):
            build_attack(self.attack, self.options)  # unknown name / bad options: an error now, not after training
        elif isinstance(self.attack, Attack):
            if self.options:
                raise ConfigError("PoisonlabAttack: options configure an attack given by name; this Attack object "
                                  "has its config already")
        else:
            raise ConfigError(f"PoisonlabAttack: attack must be a registered poisonlab attack name or a poisonlab "
                              f"Attack, got {self.attack!r}")
        try:
            check_fraction(self.fraction)
        except ConfigError as exc:
            raise ConfigError(f"PoisonlabAttack: {exc}") from None
        if (self.x_val is None) != (self.y_val is None):
            raise ConfigError("PoisonlabAttack: give both x_val and y_val, or neither")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"PoisonlabAttack: seed must be a non-negative integer, got {self.seed!r}")
        ops = self.estimator.preprocessing_operations or []
        if not all(_is_identity(op) for op in ops):
            raise UnsupportedError(
                f"PoisonlabAttack: the classifier has preprocessing {ops!r}; poisonlab trains classifier.model "
                "on raw inputs. Fold the preprocessing into the model (e.g. a first normalisation layer) instead."
            )

    def _experiment_data(self, x: np.ndarray, y_index: np.ndarray) -> Any:
        from .. import api as pl

        clf = self.estimator
        bounds = bounds_from_clip_values(clf.clip_values, x.shape[1:])
        nb = int(clf.nb_classes)
        if self.x_val is None:
            data = pl.data_from_arrays(x, y_index, x, y_index, bounds=bounds, seed=self.seed, num_classes=nb)
            return dataclasses.replace(data, test=data.val)
        x_val = np.asarray(self.x_val)
        y_val = np.asarray(self.y_val)
        y_val_index = _indices(y_val, _label_encoding(y_val, len(x_val)))
        # checked and converted by data_from_arrays; its test set is D_v, its training points all of x
        checked = pl.data_from_arrays(x, y_index, x_val, y_val_index, bounds=bounds, seed=self.seed, num_classes=nb)
        train = Dataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                        torch.from_numpy(np.ascontiguousarray(y_index, dtype=np.int64)), nb, checked.train.name,
                        checked.bounds)
        return dataclasses.replace(checked, train=train, val=checked.test, test=checked.test)

    def poison(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Craft poisons against D_tr built from ``(x, y)``: ``(x_poison, y_poison)``, only the new
        points (module docstring). ``y`` is required (index or one-hot labels)."""
        from .. import api as pl

        if kwargs:
            raise ConfigError(f"PoisonlabAttack.poison: unexpected argument(s) {sorted(kwargs)}")
        if y is None:
            raise ConfigError("PoisonlabAttack.poison needs the training labels y (index or one-hot)")
        x = np.asarray(x)
        y = np.asarray(y)
        clf = self.estimator
        if tuple(x.shape[1:]) != tuple(clf.input_shape):
            raise ConfigError(f"PoisonlabAttack.poison: inputs of shape {tuple(x.shape[1:])}, the classifier "
                              f"takes {tuple(clf.input_shape)}")
        encoding = _label_encoding(y, len(x))
        y_index = _indices(y, encoding)
        self.data_ = self._experiment_data(x, y_index)
        # the victim trains where the classifier lives (ART's clf.device), unless the recipe names a device
        recipe = {"device": str(clf.device), **self.recipe}
        victim = pl.victim(fresh_model_factory(clf.model), **recipe)
        self.poisons_ = pl.poison(self.data_, victim, self.attack, self.fraction, seed=self.seed,
                                  options=self.options or None, progress=self.progress)
        xp, yp, _ = self.poisons_.numpy()
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return xp.astype(dtype, copy=False), _encode(yp.astype(np.int64), encoding, y, int(clf.nb_classes))


__all__ = ["PoisonlabAttack", "fresh_model_factory"]
