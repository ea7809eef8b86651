"""The follower's steps with the victim recipe's optimiser, written functionally (bilevel attacks).

THE training loop (:func:`poisonlab.training.loop.make_optimizer`) trains the victim with
``torch.optim.SGD`` (momentum, Nesterov, coupled weight decay), ``Adam`` (coupled weight decay) or
``AdamW`` (decoupled weight decay). A bilevel attack's follower imitates that victim; here its
steps are the same update rules on a tuple of parameter tensors ``w`` with the optimiser's state
(momentum buffers, Adam's moments and step count) carried between calls, so a warm follower keeps
its moments across rounds as a training run would. Per-parameter step sizes are the recipe's
(:meth:`~poisonlab.attacks.bilevel.follower.Follower.step_sizes`). The learning-rate *schedule* is not
modelled: the follower steps at the recipe's base rate (its game has no epochs of the victim's).

For a plain-SGD recipe (no momentum, no weight decay) the attacks take
:func:`~poisonlab.attacks.bilevel.follower.sgd_steps` itself (:func:`~poisonlab.attacks.bilevel.follower.follower_steps`),
so their numbers do not change.

Update rules (torch 2.x, ``foreach=False`` semantics; g the gradient, t the step count):

* SGD: d = g + λ·w; with momentum μ: b ← d (first step) else μ·b + d; d ← d + μ·b (Nesterov) or b;
  w ← w − lr·d.
* Adam: g ← g + λ·w; AdamW: w ← w·(1 − lr·λ); m ← m + (1−β₁)(g − m); v ← β₂·v + (1−β₂)·g²;
  w ← w − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ...autodiff import Params
from ...training.loop import TrainConfig

LossFn = Callable[[Params], torch.Tensor]

#: torch's defaults, which THE training loop uses (TrainConfig has no betas / eps)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


#: the floor under Adam's second moment in a differentiable step: √v has an infinite derivative at
#: v = 0 (a coordinate whose gradient is exactly 0, e.g. a dead ReLU unit), which would turn the
#: hypergradient into NaN; the floor changes the step only where v < 1e-30, i.e. nowhere that matters
_V_FLOOR = 1e-30


def _grad(loss_fn: LossFn, w: Params, create_graph: bool = False) -> tuple[Params, Params]:
    if create_graph:  # keep w's graph (an unrolled, differentiable step), as sgd_steps does
        ws = tuple(p if p.requires_grad else p.detach().requires_grad_(True) for p in w)
    else:
        ws = tuple(p.detach().requires_grad_(True) for p in w)
    with torch.enable_grad():
        g = torch.autograd.grad(loss_fn(ws), ws, create_graph=create_graph)
    if create_graph:
        return ws, tuple(g)
    return tuple(p.detach() for p in ws), tuple(g)


@dataclass
class FollowerOptimizer:
    """The recipe's optimiser as functional steps with state (see the module docstring).

    ``kind`` is ``"sgd"``, ``"adam"`` or ``"adamw"``; ``rates`` one step size per parameter tensor.
    """

    kind: str
    rates: tuple[float, ...]
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = ADAM_BETAS
    eps: float = ADAM_EPS
    step: int = 0
    buffers: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    @staticmethod
    def for_recipe(recipe: TrainConfig, rates: Sequence[float]) -> "FollowerOptimizer":
        """The optimiser of ``recipe`` (its kind, momentum, Nesterov, weight decay) at ``rates``."""
        return FollowerOptimizer(recipe.optimizer, tuple(float(r) for r in rates), momentum=float(recipe.momentum),
                                 nesterov=bool(recipe.nesterov), weight_decay=float(recipe.weight_decay))

    @property
    def plain(self) -> bool:
        """SGD without momentum or weight decay: stateless, exactly :func:`~poisonlab.attacks.bilevel.follower.sgd_steps`."""
        return self.kind == "sgd" and self.momentum == 0 and self.weight_decay == 0

    @property
    def coupled_l2(self) -> float:
        """The L2 coefficient the follower's stationary point carries (∇f + λw = 0): the weight decay
        of SGD and Adam (coupled); 0 for AdamW (decoupled) and no weight decay."""
        return self.weight_decay if self.kind in ("sgd", "adam") else 0.0

    def describe(self) -> str:
        parts = [f"{self.kind} lr {self.rates[0] if self.rates else 0:g}"]
        if self.momentum:
            parts.append(f"momentum {self.momentum:g}" + (" (nesterov)" if self.nesterov else ""))
        if self.kind != "sgd":
            parts.append(f"betas {self.betas[0]:g}, {self.betas[1]:g}")
        if self.weight_decay:
            parts.append(f"{'decoupled ' if self.kind == 'adamw' else ''}weight decay {self.weight_decay:g}")
        return ", ".join(parts)

    def reset(self) -> None:
        """Forget the state (a follower restarted from the clean victim)."""
        self.step, self.buffers = 0, {}

    def steps(self, loss_fn: LossFn, w: Params, n: int, *, create_graph: bool = False) -> Params:
        """``n`` steps on ``loss_fn`` from ``w``, advancing the state. Detached results, or with
        ``create_graph`` steps that stay differentiable (the state too: see :meth:`lookahead`)."""
        if len(self.rates) != len(w):
            raise ValueError(f"FollowerOptimizer: {len(self.rates)} step sizes for {len(w)} parameter tensors")
        for _ in range(n):
            w, g = _grad(loss_fn, w, create_graph)
            if self.plain:  # w − lr·g, as sgd_steps
                w = tuple(p - lr * gi for p, gi, lr in zip(w, g, self.rates))
            else:
                w = self._sgd(w, g) if self.kind == "sgd" else self._adam(w, g, create_graph)
        return w

    def lookahead(self, loss_fn: LossFn, w: Params, n: int) -> Params:
        """``n`` differentiable steps from ``w`` and the current state, which is left as it was: the
        unrolled look-ahead of back-gradient and MetaPoison (the hypergradient flows through the
        moments and momentum buffers the steps build, as through the weights)."""
        snap = self.snapshot()
        try:
            return self.steps(loss_fn, w, n, create_graph=True)
        finally:
            self.restore(snap)

    def _sgd(self, w: Params, g: Params) -> Params:
        wd, mu = self.weight_decay, self.momentum
        d = [gi.add(p, alpha=wd) if wd else gi for p, gi in zip(w, g)]
        if mu:
            if "momentum" not in self.buffers:
                self.buffers["momentum"] = [di.clone() for di in d]
            else:
                self.buffers["momentum"] = [b.mul(mu).add(di) for b, di in zip(self.buffers["momentum"], d)]
            bufs = self.buffers["momentum"]
            d = [di.add(b, alpha=mu) for di, b in zip(d, bufs)] if self.nesterov else list(bufs)
        self.step += 1
        return tuple(p.add(di, alpha=-lr) for p, di, lr in zip(w, d, self.rates))

    def _adam(self, w: Params, g: Params, create_graph: bool = False) -> Params:
        b1, b2 = self.betas
        wd = self.weight_decay
        if self.kind == "adam" and wd:
            g = tuple(gi.add(p, alpha=wd) for p, gi in zip(w, g))
        if self.kind == "adamw" and wd:
            w = tuple(p.mul(1 - lr * wd) for p, lr in zip(w, self.rates))
        m = self.buffers.get("exp_avg") or [torch.zeros_like(p) for p in w]
        v = self.buffers.get("exp_avg_sq") or [torch.zeros_like(p) for p in w]
        m = [mi.lerp(gi, 1 - b1) for mi, gi in zip(m, g)]
        v = [vi.mul(b2).addcmul(gi, gi, value=1 - b2) for vi, gi in zip(v, g)]
        self.step += 1
        self.buffers["exp_avg"], self.buffers["exp_avg_sq"] = m, v
        bc1, bc2 = 1 - b1 ** self.step, 1 - b2 ** self.step
        root = [(vi.clamp_min(_V_FLOOR) if create_graph else vi).sqrt() for vi in v]
        return tuple(p.addcdiv(mi, (ri / bc2 ** 0.5).add(self.eps), value=-lr / bc1)
                     for p, mi, ri, lr in zip(w, m, root, self.rates))

    # ------------------------------------------------------------------------ state: checkpoints, rollback
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able metadata) of the state, for a checkpoint."""
        tensors = {f"fopt.{k}.{i}": t for k, ts in self.buffers.items() for i, t in enumerate(ts)}
        return tensors, {"step": self.step, "buffers": sorted(self.buffers)}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], like: Sequence[torch.Tensor]) -> None:
        """Restore :meth:`state` (tensors cast like the parameters ``like``)."""
        self.step = int(meta.get("step", 0))
        self.buffers = {k: [tensors[f"fopt.{k}.{i}"].to(p.device, p.dtype) for i, p in enumerate(like)]
                        for k in meta.get("buffers", [])}

    def snapshot(self) -> tuple[int, dict[str, list[torch.Tensor]]]:
        """The state as it is now (the tensors are never modified in place, so no copy is needed)."""
        return self.step, {k: list(v) for k, v in self.buffers.items()}

    def restore(self, snap: tuple[int, dict[str, list[torch.Tensor]]]) -> None:
        self.step, self.buffers = snap[0], {k: list(v) for k, v in snap[1].items()}
