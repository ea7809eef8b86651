"""GradPC: gradient-based parameter corruption (Sun et al., "Exploring the vulnerability of deep
neural networks: a study of parameter corruption", AAAI 2021; thesis §3.3, Table 3.1).

Threat model: the attacker overwrites the trained weights directly (no data, no retraining) with a
relative budget ‖Δw‖ ≤ ε_w·‖w‖ (L2, or L∞ with ‖w‖∞), optionally touching at most ``topk``
entries, to maximise the loss on its validation set D_v. Solved by normalised-gradient ascent
with projection onto the budget set. In poisonlab it makes *targets* for Gradient Canceling
(registered as target ``"gradpc"``), not poisons.

It changes parameters only, never inputs, so it needs nothing of the data's bounds or input shape:
any victim module and any ``val.x`` (N, *input_shape) the victim takes.
Shapes: ``val.x`` (N, *input_shape), ``val.y`` (N,); parameters as in the victim.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..autodiff import flatten, functional_loss, named_params, unflatten, value_and_grad
from ..data.types import Dataset
from ..errors import ConfigError
from ..options import config_to_dict
from ..seeding import device_generator
from ..training import accuracy
from ..validation import check_choice, check_int, check_number
from .targets import TargetConfig, TargetContext, TargetMaker, register_target

WHAT = "gradpc"


@dataclass(frozen=True, kw_only=True)
class GradPCConfig(TargetConfig):
    """GradPC's options: the ``"gradpc"`` target maker's, and the option group ``target_options``
    of the ``gc`` and ``feature_targeted`` attacks (``-A target_options.steps=200``; on the command
    line ``--eps-w``, ``--pc-norm``, ``--pc-topk``, ``--pc-steps``, ``--pc-lr``).

    Attributes:
        eps_w: ε_w, the radius of the corruption relative to the weights: ‖Δw‖ ≤ eps_w·‖w‖ in the
            chosen norm (>= 0). Default 0.5.
        norm: ``"l2"`` (normalised-gradient steps) or ``"linf"`` (signed steps, ‖w‖∞ as the scale).
            Default ``"l2"``.
        topk: At most this many parameter entries change (the largest |Δ_i| are kept); null: any
            number. Default null.
        steps: Ascent steps on the D_v loss (an integer >= 1). Default 50.
        lr: Step length as a fraction of the radius (each step moves Δ by lr·radius). Default 0.1.
        params: Names of the parameter tensors to corrupt; empty: every trainable parameter.
            Default ``()``.
        batch_size: D_v points per step (a seeded random batch); null: all of D_v, and the iterate
            of highest loss is kept. Default null.
        seed: Seed of those D_v batches (used only with ``batch_size``). Default 0.
    """

    eps_w: float = 0.5
    norm: str = "l2"
    topk: int | None = None
    steps: int = 50
    lr: float = 0.1
    params: tuple[str, ...] = ()
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_number(self.eps_w, "eps_w", WHAT, allow_zero=True)
        check_choice(self.norm, "norm", ("l2", "linf"), WHAT)
        if self.topk is not None:
            check_int(self.topk, "topk", WHAT)
        check_int(self.steps, "steps", WHAT)
        check_number(self.lr, "lr", WHAT)
        if not isinstance(self.params, (tuple, list)) or not all(isinstance(n, str) for n in self.params):
            raise ConfigError(f"{WHAT}: params must be a list of parameter names, got {self.params!r}")
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", WHAT)
        check_int(self.seed, "seed", WHAT, minimum=0)


def _norm(v: torch.Tensor, norm: str) -> float:
    return float(v.abs().max()) if norm == "linf" else float(torch.linalg.vector_norm(v))


def project(delta: torch.Tensor, radius: float, norm: str, topk: int | None = None) -> torch.Tensor:
    """Euclidean projection of a flat Δ onto {‖Δ‖ ≤ radius, at most ``topk`` nonzeros}.

    (Keeping the ``topk`` largest |Δ_i| then projecting onto the ball is the exact projection onto
    this union of sparse balls, for both L2 and L∞.)
    """
    if topk is not None and topk < delta.numel():
        keep = delta.abs().topk(topk).indices
        sparse = torch.zeros_like(delta)
        sparse[keep] = delta[keep]
        delta = sparse
    if norm == "linf":
        return delta.clamp(-radius, radius)
    n = torch.linalg.vector_norm(delta)
    return delta * (radius / n).clamp(max=1.0)  # = delta when inside the ball; no host sync


def corrupt(
    model: nn.Module,
    val: Dataset,
    eps_w: float = 0.5,
    norm: str = "l2",
    topk: int | None = None,
    steps: int = 50,
    lr: float = 0.1,
    params: Sequence[str] | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """GradPC: a corrupted copy of ``model`` maximising the loss on ``val`` with ‖Δw‖ ≤ ε_w‖w‖.

    Each step moves Δ by lr·radius along the normalised gradient (L2) or its sign (L∞), then
    projects. The iterate with the highest loss seen is returned. ``model`` is not changed.
    Returns (target, info) with the radius, ‖Δ‖, losses and D_v accuracies before/after.
    """
    cfg = GradPCConfig(eps_w=eps_w, norm=norm, topk=topk, steps=steps, lr=lr, params=tuple(params or ()),
                       batch_size=batch_size, seed=seed)
    t0 = time.perf_counter()
    model = copy.deepcopy(model).eval()
    try:
        names, w0 = named_params(model, list(cfg.params) or None)
    except KeyError as exc:
        raise ConfigError(f"{WHAT}: {exc.args[0]}") from None
    device = w0[0].device
    flat0 = flatten(w0)
    radius = cfg.eps_w * _norm(flat0, cfg.norm)
    x, y = val.x.to(device), val.y.to(device)
    n = len(x)
    bs = cfg.batch_size or n
    g = device_generator(torch.Generator().manual_seed(int(seed)), device)  # mini-batches drawn on the device

    ce = functional_loss(model, names)

    def loss_and_grad(delta: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, grads = value_and_grad(ce, unflatten((flat0 + delta).detach(), w0), x[idx], y[idx])
        return loss, flatten(grads)

    delta = torch.zeros_like(flat0)
    best, best_loss = delta, torch.tensor(-math.inf, dtype=flat0.dtype, device=device)

    def keep_best(delta: torch.Tensor, loss: torch.Tensor) -> None:  # on the device: no host sync per step
        nonlocal best, best_loss
        better = loss > best_loss
        best, best_loss = torch.where(better, delta, best), torch.where(better, loss, best_loss)
    losses: list[torch.Tensor] = []
    all_idx = torch.arange(n, device=device)
    for _ in tqdm(range(cfg.steps), desc="gradpc", disable=not progress, leave=False):
        idx = all_idx if bs >= n else torch.randperm(n, generator=g, device=g.device)[:bs]
        loss, grad = loss_and_grad(delta, idx)
        losses.append(loss)
        if bs >= n:
            keep_best(delta, loss)
        step = grad.sign() if cfg.norm == "linf" else grad / torch.linalg.vector_norm(grad).clamp_min(1e-30)
        delta = project(delta + cfg.lr * radius * step, radius, cfg.norm, cfg.topk)
    final_loss, _ = loss_and_grad(delta, all_idx)
    if bs < n:
        best, best_loss = delta, final_loss
    else:
        keep_best(delta, final_loss)
    loss_trace = torch.stack(losses).tolist() if losses else []
    with torch.no_grad():
        current = dict(model.named_parameters())
        for name, v in zip(names, unflatten(flat0 + best, w0)):
            current[name].copy_(v)
    model.eval()
    info = {
        **config_to_dict(cfg),
        "params": list(names),
        "radius": radius,
        "delta_norm": _norm(best, cfg.norm),
        "relative_change": _norm(best, cfg.norm) / max(_norm(flat0, cfg.norm), 1e-30),
        "nonzeros": int((best != 0).sum()),
        "val_loss_clean": loss_trace[0] if loss_trace else float("nan"),
        "val_loss_target": float(best_loss),
        "val_accuracy_target": accuracy(model, val),
        "loss_trace": loss_trace,
        "seconds": time.perf_counter() - t0,
    }
    return model, info


@register_target("gradpc")
class GradPCTarget(TargetMaker[GradPCConfig]):
    """GradPC (parameter corruption): the clean victim moved within ‖Δw‖ ≤ eps_w·‖w‖ to maximise the
    validation loss (:func:`corrupt`); any victim."""

    summary = "GradPC: the clean victim moved within ‖Δw‖ ≤ eps_w·‖w‖ to maximise the validation loss"
    report_keys = ("eps_w", "norm", "topk", "radius", "relative_change", "nonzeros", "val_loss_clean",
                   "val_loss_target", "seconds")
    metadata_keys = ("eps_w",)

    def make(self, model: nn.Module, val: Dataset, *, progress: bool = False,
             context: TargetContext | None = None) -> tuple[nn.Module, dict[str, Any]]:
        cfg = self.config
        target, info = corrupt(model, val, progress=progress, **{**config_to_dict(cfg), "params": list(cfg.params)})
        info["val_accuracy_clean"] = accuracy(model, val)
        return target, {"source": "gradpc", **info}


__all__ = ["GradPCConfig", "GradPCTarget", "corrupt", "project"]
