"""THE training loop and evaluation used by every stage (pretrain, attack inner loops, retrain).

Plain mini-batch SGD as in the thesis (learning rate 0.1, 100 epochs, batch 1000 for MNIST-like
data, 256 for CIFAR-10), seeded and deterministic on CPU, on CUDA when present.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.types import Dataset
from ..errors import ConfigError
from ..options import config_from_dict

#: ``batch_loss(model, x_batch, y_batch) -> (B,)`` per-sample losses replacing plain cross-entropy
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A training recipe. ``batch_size=None`` means the dataset's default (1000 MNIST, 256 CIFAR-10)."""

    lr: float = 0.1
    epochs: int = 100
    batch_size: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    device: str = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ConfigError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if self.batch_size is not None and not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, d, "training recipe")

    def with_batch_default(self, default: int) -> "TrainConfig":
        return self if self.batch_size is not None else replace(self, batch_size=default)


def param_groups(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: ``model.optimizer_groups(lr)`` when the model defines it
    (e.g. a fine-tuned extractor whose encoder takes a smaller step than its head), else one group
    of all parameters at ``lr``."""
    groups = getattr(model, "optimizer_groups", None)
    if callable(groups):
        return list(groups(lr))
    return [{"params": list(model.parameters()), "lr": lr}]


def param_lr_scales(model: nn.Module, names: list[str]) -> tuple[float, ...]:
    """Per named parameter, the multiple of the recipe's ``lr`` that THE training loop steps it by
    (:func:`param_groups` at lr = 1; 0 for a parameter in no group, which the loop never moves).
    Functional followers of bilevel attacks use it to take the recipe's steps."""
    scale = {id(p): float(g.get("lr", 1.0)) for g in param_groups(model, 1.0) for p in g["params"]}
    params = dict(model.named_parameters())
    return tuple(scale.get(id(params[n]), 0.0) for n in names)


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    generator: torch.Generator,
    *,
    progress: bool | str = False,
    sample_weight: torch.Tensor | None = None,
    batch_loss: BatchLoss | None = None,
) -> nn.Module:
    """Train ``model`` in place with mini-batch SGD on cross-entropy; returns it.

    ``generator`` drives the batch order (so a run is reproducible from its seed);
    ``sample_weight`` (N,) optionally weights each point's loss (used by defenses);
    ``batch_loss`` optionally replaces the per-sample cross-entropy (training-time defenses
    such as MaxUp); the loss is still averaged (or weighted) over the batch here. The recipe's
    ``lr`` is the base step; a model may scale it per parameter group (:func:`param_groups`).
    """
    device = resolve_device(config.device)
    model.to(device).train()
    x, y = data.x.to(device), data.y.to(device)
    w = sample_weight.to(device) if sample_weight is not None else None
    n = len(x)
    bs = config.batch_size or n
    opt = torch.optim.SGD(param_groups(model, config.lr), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    desc = progress if isinstance(progress, str) else "train"
    for _ in tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False, unit="ep"):
        if n == 0:
            break
        perm = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            if batch_loss is not None:
                per = batch_loss(model, x[idx], y[idx])
                loss = per.mean() if w is None else (per * w[idx]).sum() / w[idx].sum().clamp_min(1e-12)
            elif w is None:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            else:
                loss = (F.cross_entropy(model(x[idx]), y[idx], reduction="none") * w[idx]).sum() / w[idx].sum().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits (N, C) in eval mode, on the model's device and in its dtype, returned on CPU."""
    model.eval()
    p = next(model.parameters())
    outs = [model(x[i : i + batch_size].to(p.device, p.dtype)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, data: Dataset, batch_size: int = 4096) -> float:
    """Accuracy in percent."""
    if len(data) == 0:
        return float("nan")
    pred = predict_logits(model, data.x, batch_size).argmax(1)
    return 100.0 * (pred == data.y).double().mean().item()


@torch.no_grad()
def mean_loss(model: nn.Module, data: Dataset, batch_size: int = 4096) -> float:
    logits = predict_logits(model, data.x, batch_size)
    return F.cross_entropy(logits, data.y).item()
