"""The follower F as a *functional* network, its gradient steps, and what it models of the victim.

The follower is the victim network used through ``torch.func.functional_call`` (:mod:`poisonlab.autodiff`):
parameters ``w`` (a tuple of tensors shaped like the victim's trainable ``named_parameters()``) plus
the module. Its steps are plain gradient steps (the training loop's SGD, written functionally so
unrolled attacks can differentiate through them) or the recipe's own optimiser (:func:`follower_steps`
with a :class:`~poisonlab.attacks.bilevel.optimizer.FollowerOptimizer`: momentum, Adam/AdamW moments,
weight decay) — and, where a follower only approximates the recipe, the note that says so
(:func:`follower_note`: ``info["follower"]`` and one warning). The labels of direct-variable poisons
(:func:`initial_labels`) are read from it too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...autodiff import Params, functional_model
from ...data.types import Dataset
from ...training.loop import TrainConfig, param_lr_scales
from .optimizer import FollowerOptimizer
from .schedule import chunks


@dataclass
class Follower:
    """A victim network used functionally: ``net`` supplies the architecture (and buffers),
    ``names`` the parameters that ``w`` replaces."""

    net: nn.Module
    names: list[str]
    #: per parameter, the multiple of the recipe's lr the training loop steps it by (empty: 1 for all)
    lr_scale: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self._logits = functional_model(self.net, self.names)  # THE functional call (poisonlab.autodiff)

    @staticmethod
    def from_model(model: nn.Module, dtype: torch.dtype) -> tuple["Follower", Params]:
        model = model.to(dtype).eval()
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        # parameters THE training loop never moves (step 0, e.g. encoder_lr_scale=0) stay fixed here too
        kept = [(n, s) for n, s in zip(trainable, param_lr_scales(model, trainable)) if s > 0]
        names, scales = [n for n, _ in kept], tuple(s for _, s in kept)
        params = dict(model.named_parameters())
        return Follower(model, names, scales), tuple(params[n].detach().clone() for n in names)

    def step_sizes(self, lr: float) -> tuple[float, ...]:
        """The recipe's SGD step per parameter at base rate ``lr`` (e.g. a fine-tuned extractor's
        encoder steps by lr·encoder_lr_scale, as in THE training loop) — pass to :func:`sgd_steps`."""
        return tuple(lr * s for s in self.lr_scale) if self.lr_scale else (lr,) * len(self.names)

    def logits(self, w: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The follower's logits (N, C) at parameters ``w``: :func:`poisonlab.autodiff.functional_model`."""
        return self._logits(w, x)

    def loss(self, w: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the follower on (x, y)."""
        return F.cross_entropy(self.logits(w, x), y)

    def mixed_loss(self, w: Sequence[torch.Tensor], xc: torch.Tensor, yc: torch.Tensor,
                   xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
        """f = mean cross-entropy on the clean batch ∪ the poison batch (every point weighs the same)."""
        return self.loss(w, *self.mixed_batch(xc, yc, xp, yp))

    @staticmethod
    def mixed_batch(xc: torch.Tensor, yc: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean batch ∪ the poison batch (inputs in the clean batch's dtype, labels) that
        :meth:`mixed_loss` is the loss of."""
        return torch.cat([xc, xp.to(xc.dtype)]), torch.cat([yc, yp])

    def weighted_mixed_loss(self, w: Sequence[torch.Tensor], xc: torch.Tensor, yc: torch.Tensor,
                            xp: torch.Tensor, yp: torch.Tensor, eps: float) -> torch.Tensor:
        """(CE_clean + ε·CE_poison)/(1+ε): the expected batch loss on D_tr ∪ D_p, |D_p| = ε|D_tr|,
        when the batch carries *all* poisons."""
        return (self.loss(w, xc, yc) + eps * self.loss(w, xp.to(xc.dtype), yp)) / (1.0 + eps)

    @torch.no_grad()
    def mean_loss(self, w: Sequence[torch.Tensor], data: Dataset, chunk: int = 4096) -> float:
        total, n = 0.0, len(data)
        for s in range(0, n, chunk):
            xb = data.x[s : s + chunk]
            total += F.cross_entropy(self.logits(w, xb), data.y[s : s + chunk], reduction="sum").item()
        return total / max(n, 1)

    @torch.no_grad()
    def accuracy(self, w: Sequence[torch.Tensor], data: Dataset, chunk: int = 4096) -> float:
        correct, n = 0, len(data)
        for s in range(0, n, chunk):
            correct += int((self.logits(w, data.x[s : s + chunk]).argmax(1) == data.y[s : s + chunk]).sum().item())
        return 100.0 * correct / max(n, 1)


def sgd_steps(loss_fn: Callable[[Params], torch.Tensor], w: Params, lr: float | Sequence[float], steps: int,
              *, create_graph: bool = False) -> Params:
    """``steps`` plain gradient steps w ← w − lr·∇loss(w) (the training loop's SGD, functional);
    ``lr`` is one rate or one per parameter tensor (:meth:`Follower.step_sizes`).

    With ``create_graph`` the steps stay differentiable (unrolled attacks); otherwise ``w`` is
    detached after every step.
    """
    rates = (float(lr),) * len(w) if isinstance(lr, (int, float)) else tuple(lr)
    if len(rates) != len(w):
        raise ValueError(f"sgd_steps: {len(rates)} step sizes for {len(w)} parameter tensors")
    for _ in range(steps):
        if create_graph:
            ws = tuple(p if p.requires_grad else p.detach().requires_grad_(True) for p in w)
        else:
            ws = tuple(p.detach().requires_grad_(True) for p in w)
        with torch.enable_grad():
            g = torch.autograd.grad(loss_fn(ws), ws, create_graph=create_graph)
        w = tuple(p - a * gi for p, gi, a in zip(ws, g, rates)) if create_graph else tuple(
            (p - a * gi).detach() for p, gi, a in zip(ws, g, rates))
    return w


def follower_steps(opt: FollowerOptimizer, loss_fn: Callable[[Params], torch.Tensor], w: Params, steps: int) -> Params:
    """``steps`` follower steps with the recipe's optimiser ``opt`` (its state advances); a plain-SGD
    recipe takes exactly :func:`sgd_steps` at ``opt.rates``."""
    if opt.plain:
        return sgd_steps(loss_fn, w, opt.rates, steps)
    return opt.steps(loss_fn, w, steps)


def follower_lookahead(opt: FollowerOptimizer, loss_fn: Callable[[Params], torch.Tensor], w: Params,
                       steps: int) -> Params:
    """``steps`` differentiable follower steps from ``w`` with the recipe's optimiser ``opt``, its
    state left as it was (the unrolled look-ahead of back-gradient and MetaPoison); a plain-SGD
    recipe takes exactly :func:`sgd_steps` with ``create_graph``."""
    if opt.plain:
        return sgd_steps(loss_fn, w, opt.rates, steps, create_graph=True)
    return opt.lookahead(loss_fn, w, steps)


def recipe_is_plain_sgd(recipe: TrainConfig) -> bool:
    """True when THE training loop with ``recipe`` takes exactly the follower's steps: SGD without
    momentum or weight decay at a constant learning rate."""
    return (recipe.optimizer == "sgd" and recipe.momentum == 0 and not recipe.nesterov
            and recipe.weight_decay == 0 and recipe.schedule is None)


def follower_description(recipe: TrainConfig, lr: float, modelled: bool = False) -> tuple[str, bool]:
    """(what the follower does, relative to the victim's recipe; whether that approximates it).

    ``modelled``: the follower takes the recipe's optimiser (:func:`follower_steps`), which leaves
    only a learning-rate schedule approximated (by the base rate); otherwise it takes plain SGD."""
    if modelled:
        opt = FollowerOptimizer.for_recipe(recipe, (lr,))
        approximated = recipe.schedule is not None
        text = (f"{opt.describe()}: the recipe's optimiser (victim recipe: {recipe.describe()}"
                + ("; its schedule approximated by the base rate)" if approximated else ")"))
        return text, approximated
    approximated = not recipe_is_plain_sgd(recipe)
    text = f"plain SGD at lr {lr:g} (victim recipe: {recipe.describe()}" + ("; approximated)" if approximated else ")")
    return text, approximated


def follower_note(recipe: TrainConfig, lr: float, what: str, modelled: bool = False) -> str:
    """:func:`follower_description`'s text for ``info["follower"]``; warns once when the follower
    only approximates the victim's recipe."""
    text, approximated = follower_description(recipe, lr, modelled)
    if approximated:
        missing = "" if modelled else ": its optimiser, momentum, weight decay and schedule are not modelled"
        warnings.warn(f"{what}: the follower takes {text}{missing} (set follower_lr to tune the step)", stacklevel=4)
    return text


# ---------------------------------------------------------------------------- poison labels
def initial_labels(rule: str, y: torch.Tensor, num_classes: int, fol: "Follower | None" = None,
                   w: Params | None = None, x: torch.Tensor | None = None) -> torch.Tensor:
    """Labels of direct-variable poisons: ``keep`` (clean label), ``flip`` (y ← C−1−y, the thesis'
    10 − y kept in range) or ``max_loss`` (the label the follower ``w`` finds least likely for x)."""
    if rule == "keep":
        return y.clone()
    if rule == "flip":
        return (num_classes - 1) - y
    assert fol is not None and w is not None and x is not None
    with torch.no_grad():
        out = torch.cat([fol.logits(w, x[sl]) for sl in chunks(len(x), 4096)]) if len(x) else x.new_zeros(0, num_classes)
    return out.argmin(1)


LABEL_RULES = ("keep", "flip", "max_loss")
