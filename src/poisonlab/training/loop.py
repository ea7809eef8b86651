"""THE training loop and evaluation used by every stage (pretrain, attack inner loops, retrain).

By default plain mini-batch SGD as in the thesis (learning rate 0.1, 100 epochs, batch 1000 for
MNIST-like data, 256 for CIFAR-10, constant learning rate), seeded and deterministic on CPU, on CUDA
when present. A :class:`TrainConfig` may instead ask for SGD with (Nesterov) momentum, Adam or
AdamW, and a cosine or step learning-rate schedule; :func:`make_optimizer` builds them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.types import Dataset
from ..devices import resolve_device
from ..errors import ConfigError
from ..options import config_from_dict
from ..validation import check_int, check_number

#: ``batch_loss(model, x_batch, y_batch) -> (B,)`` per-sample losses replacing plain cross-entropy
BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: the optimisers a recipe may name (``TrainConfig.optimizer``)
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
#: the learning-rate schedules a recipe may name (``TrainConfig.schedule``; None = constant)
SCHEDULES: tuple[str, ...] = ("cosine", "step")


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(repr(v) for v in values)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """A training recipe: optimiser, learning-rate schedule, epochs and batch size.

    The defaults are the thesis' plain SGD: learning rate 0.1, no momentum, no weight decay,
    constant learning rate, 100 epochs, the dataset's batch size. Every field is checked on
    construction; a bad value raises :class:`~poisonlab.errors.ConfigError` naming the field.

    Attributes:
        lr: Base learning rate (step size), > 0. Default 0.1. A model may scale it per parameter
            group (:func:`param_groups`, e.g. a fine-tuned extractor's encoder); the schedule
            scales every group by the same factor. 0.1 suits SGD; Adam/AdamW usually want ~1e-3.
        epochs: Number of passes over the training set, an integer >= 0. Default 100.
        batch_size: Mini-batch size in samples, a positive integer, or None (default) for the
            dataset's default (1000 MNIST-like, 256 CIFAR-10); THE training loop itself reads
            None as full-batch.
        momentum: SGD momentum coefficient in [0, 1). Default 0.0 (plain SGD). SGD only: Adam
            and AdamW use their own moment estimates (torch's default betas (0.9, 0.999)), so a
            non-zero momentum with them is an error.
        weight_decay: L2 penalty coefficient, >= 0. Default 0.0. For "sgd" and "adam" it is added
            to the gradient (coupled L2); for "adamw" it is torch's decoupled weight decay
            (note: 0.0 here, not torch's AdamW default of 0.01).
        nesterov: Use Nesterov momentum (SGD only; needs momentum > 0). Default False.
        optimizer: Which optimiser: "sgd" (torch.optim.SGD, default), "adam" (torch.optim.Adam)
            or "adamw" (torch.optim.AdamW), the latter two with torch's default betas and eps.
        schedule: Learning-rate schedule, stepped once at the end of every epoch: None (default)
            keeps the learning rate constant; "cosine" anneals it from ``lr`` to 0 over
            ``epochs`` epochs (CosineAnnealingLR with T_max = epochs: epoch e trains at
            lr * (1 + cos(pi * e / epochs)) / 2, so it reaches 0 after the last epoch); "step"
            multiplies it by ``gamma`` every ``step_size`` epochs (StepLR: epoch e trains at
            lr * gamma ** (e // step_size)).
        step_size: For schedule "step": the period in epochs, a positive integer, or None
            (default) for ``max(1, epochs // 3)`` (see :attr:`resolved_step_size`). Must be None
            for other schedules.
        gamma: For schedule "step": the factor applied every ``step_size`` epochs, in (0, 1].
            Default 0.1. Must stay 0.1 for other schedules.
        device: Where to train: "auto" (default; CUDA when available, else CPU), "cpu",
            "cuda" / "cuda:N" or "mps". Checked on construction (:func:`resolve_device`): a device
            this machine's torch cannot use is a ConfigError naming the devices it can.
    """

    lr: float = 0.1
    epochs: int = 100
    batch_size: int | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    optimizer: str = "sgd"
    schedule: str | None = None
    step_size: int | None = None
    gamma: float = 0.1
    device: str = "auto"

    def __post_init__(self) -> None:
        check_number(self.lr, "lr")
        resolve_device(self.device)
        if isinstance(self.device, torch.device):  # stored as its name (records are JSON)
            object.__setattr__(self, "device", str(self.device))
        check_int(self.epochs, "epochs", minimum=0)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size")
        if not (_is_number(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        check_number(self.weight_decay, "weight_decay", allow_zero=True)
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {_choices(OPTIMIZERS)}, got {self.optimizer!r}")
        if not isinstance(self.nesterov, bool):
            raise ConfigError(f"nesterov must be True or False, got {self.nesterov!r}")
        if self.nesterov and self.optimizer != "sgd":
            raise ConfigError(f"nesterov applies to optimizer 'sgd' only, got nesterov=True with "
                              f"optimizer {self.optimizer!r}; allowed: nesterov=False")
        if self.optimizer != "sgd" and self.momentum != 0:
            raise ConfigError(f"momentum applies to optimizer 'sgd' only, got momentum {self.momentum!r} "
                              f"with optimizer {self.optimizer!r} (Adam/AdamW use their own betas); "
                              f"allowed: momentum 0.0 with {self.optimizer!r}")
        if self.nesterov and self.momentum <= 0:
            raise ConfigError(f"nesterov=True needs momentum in (0, 1), got momentum {self.momentum!r}")
        if self.schedule is not None and (not isinstance(self.schedule, str) or self.schedule not in SCHEDULES):
            raise ConfigError(f"schedule must be None (constant lr) or one of {_choices(SCHEDULES)}, "
                              f"got {self.schedule!r}")
        if self.step_size is not None:
            check_int(self.step_size, "step_size")
        if not (_is_number(self.gamma) and 0 < self.gamma <= 1):
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma!r}")
        if self.schedule != "step":
            if self.step_size is not None:
                raise ConfigError(f"step_size applies to schedule 'step' only, got step_size {self.step_size!r} "
                                  f"with schedule {self.schedule!r}; allowed: step_size None")
            if self.gamma != 0.1:
                raise ConfigError(f"gamma applies to schedule 'step' only, got gamma {self.gamma!r} "
                                  f"with schedule {self.schedule!r}; allowed: gamma 0.1 (the default)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, d, "training recipe")

    @property
    def resolved_step_size(self) -> int:
        """The step schedule's period in epochs: ``step_size``, else ``max(1, epochs // 3)``."""
        return self.step_size if self.step_size is not None else max(1, self.epochs // 3)

    def describe(self) -> str:
        """One line for humans, e.g. ``"sgd lr 0.1, momentum 0.9 (nesterov), 100 epochs, batch
        1000, cosine schedule"``."""
        parts = [f"{self.optimizer} lr {self.lr:g}"]
        if self.momentum:
            parts.append(f"momentum {self.momentum:g}" + (" (nesterov)" if self.nesterov else ""))
        if self.weight_decay:
            parts.append(f"{'decoupled ' if self.optimizer == 'adamw' else ''}weight decay {self.weight_decay:g}")
        parts.append(f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}")
        parts.append(f"batch {self.batch_size}" if self.batch_size is not None else "dataset's default batch")
        if self.schedule is None:
            parts.append("constant lr")
        elif self.schedule == "cosine":
            parts.append("cosine schedule")
        else:
            k = self.resolved_step_size
            parts.append(f"step schedule (x{self.gamma:g} every {k} epoch{'' if k == 1 else 's'})")
        return ", ".join(parts)


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


def make_optimizer(
    model: nn.Module, config: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The recipe's optimiser over :func:`param_groups` ``(model, config.lr)`` and its learning-rate
    scheduler (None for a constant learning rate).

    The scheduler is meant to be stepped once after each epoch (as :func:`train` does); it scales
    every parameter group's learning rate by the same factor, so per-group ratios are kept.
    """
    groups = param_groups(model, config.lr)
    if config.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                                     weight_decay=config.weight_decay, nesterov=config.nesterov)
    elif config.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    else:  # unreachable: TrainConfig validates the name
        raise ConfigError(f"optimizer must be one of {_choices(OPTIMIZERS)}, got {config.optimizer!r}")
    sched: torch.optim.lr_scheduler.LRScheduler | None
    if config.schedule is None:
        sched = None
    elif config.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs), eta_min=0.0)
    elif config.schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.resolved_step_size, gamma=config.gamma)
    else:  # unreachable: TrainConfig validates the name
        raise ConfigError(f"schedule must be None or one of {_choices(SCHEDULES)}, got {config.schedule!r}")
    return opt, sched


def lr_at(config: TrainConfig, epoch: int) -> float:
    """The base learning rate (a group at scale 1) that :func:`train` uses during epoch ``epoch``
    (0-based); ``epoch == config.epochs`` gives the rate after the last epoch (0 for "cosine").

    Computed by stepping the very scheduler :func:`make_optimizer` builds, so it cannot drift
    from what the training loop does.
    """
    if not (_is_int(epoch) and 0 <= epoch <= config.epochs):
        raise ValueError(f"epoch must be an integer in [0, {config.epochs}], got {epoch!r}")
    opt, sched = make_optimizer(nn.Linear(1, 1, bias=False), config)
    if sched is not None:
        for _ in range(epoch):
            opt.step()  # no gradients: moves nothing, but keeps the scheduler's call order check happy
            sched.step()
    return float(opt.param_groups[0]["lr"])


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
    """Train ``model`` in place with the recipe's optimiser (by default plain mini-batch SGD) on
    cross-entropy; returns it. The learning-rate schedule, if any, is stepped after every epoch.

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
    opt, sched = make_optimizer(model, config)
    desc = progress if isinstance(progress, str) else "train"
    # every batch's inputs are gathered into one buffer, reused: a new one per batch is, for a large
    # batch (full-batch LR: all of D_tr), fresh memory from the OS every step (page faults); same values
    buf = x.new_empty((min(bs, n), *x.shape[1:]))
    for _ in tqdm(range(config.epochs), desc=desc, disable=not progress, leave=False, unit="ep"):
        if n == 0:
            break
        # drawn on the host generator (the same batches on every device), one upload per epoch
        perm = torch.randperm(n, generator=generator, device=generator.device).to(device, non_blocking=True)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            xb = torch.index_select(x, 0, idx, out=buf[: len(idx)])
            if batch_loss is not None:
                per = batch_loss(model, xb, y[idx])
                loss = per.mean() if w is None else (per * w[idx]).sum() / w[idx].sum().clamp_min(1e-12)
            elif w is None:
                loss = F.cross_entropy(model(xb), y[idx])
            else:
                loss = (F.cross_entropy(model(xb), y[idx], reduction="none") * w[idx]).sum() / w[idx].sum().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    model.eval()
    return model


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits (N, C) in eval mode, on the model's device and in its dtype, returned on CPU."""
    model.eval()
    p = next(model.parameters())
    outs = [model(x[i : i + batch_size].to(p.device, p.dtype)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, device="cpu")


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
