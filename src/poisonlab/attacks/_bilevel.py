"""Shared machinery of the bilevel attacks (tgda, back_gradient, metapoison, min_max).

Not an attack itself (no registry key). Everything here is plumbing around the one second-order
engine in :mod:`poisonlab.autodiff`:

* the follower F as a *functional* network: parameters ``w`` (a tuple of tensors) plus the module
  used by ``torch.func.functional_call``; cross-entropy losses of ``w`` on (clean ⊕ poison) batches;
* plain gradient steps of the follower (the training loop's SGD, written functionally so unrolled
  attacks can differentiate through them), or the recipe's own optimiser (:func:`follower_steps`
  with a :class:`~poisonlab.attacks._follower_optim.FollowerOptimizer`: momentum, Adam/AdamW moments,
  weight decay) — and, where a follower only approximates the recipe, the note that says so
  (:func:`follower_note`: ``info["follower"]`` and one warning);
* the per-round batch schedule (which clean, poison and validation points a round sees);
* resumable checkpoints (safetensors + a JSON fingerprint, never pickle).

Shapes: inputs ``(N, *input_shape)`` — images ``(N, C, H, W)``, features ``(N, d)`` — inside the
data's bounds (``T.train.bounds``; every projection of a poison uses them), labels ``(N,)`` int64,
``w`` a tuple of parameter tensors shaped like the victim's ``named_parameters()``. Leader step
sizes are in the data's units.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..autodiff import Params, functional_model
from ..cache import tensor_fingerprint
from ..data.bounds import Bounds
from ..data.types import AttackData, Dataset, PoisonSet
from ..errors import ConfigError
from ..options import config_to_dict
from ..seeding import draw_seed, torch_generator
from ..training.loop import TrainConfig, param_lr_scales
from ..training.victim import Victim
from ..validation import check_choice, check_int, check_number
from ._follower_optim import FollowerOptimizer
from .base import AttackConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_dtype(name: str, what: str) -> None:
    """``dtype`` is one of :data:`DTYPES` (the attacks' working precision)."""
    check_choice(name, "dtype", sorted(DTYPES), what)


def check_steps(cfg: Any, what: str) -> None:
    """The step, batch and precision options the bilevel attacks share: ``leader_lr`` a number > 0,
    ``follower_lr`` one or null, ``batch_size`` and (where ``cfg`` has it) ``val_batch_size`` integers
    >= 1 or null, ``dtype`` one of :data:`DTYPES`."""
    check_number(cfg.leader_lr, "leader_lr", what)
    if cfg.follower_lr is not None:
        check_number(cfg.follower_lr, "follower_lr", what)
    for key in ("batch_size", "val_batch_size"):
        if getattr(cfg, key, None) is not None:
            check_int(getattr(cfg, key), key, what)
    check_dtype(cfg.dtype, what)


def check_group(value: Any, cls: type, key: str, what: str) -> None:
    """An option group's value is its config class (a mapping became one in :func:`poisonlab.options.config_from_dict`)."""
    if not isinstance(value, cls):
        raise ConfigError(f"{what}: {key} is an option group; give it as a mapping or as {key}.<option>=value, "
                          f"got {value!r}")


# ---------------------------------------------------------------------------- the functional follower
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
        return self.loss(w, torch.cat([xc, xp.to(xc.dtype)]), torch.cat([yc, yp]))

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


# ---------------------------------------------------------------------------- data on the attack device
@dataclass(frozen=True)
class AttackTensors:
    """D_tr, D_v and the poison sources D_p⁰ cast to the attack's device and dtype."""

    train: Dataset
    val: Dataset
    source_index: torch.Tensor  # (P,) indices into D_tr
    x0: torch.Tensor  # (P, *input_shape) initial poisons
    y0: torch.Tensor  # (P,)

    @staticmethod
    def build(data: AttackData, sources: torch.Tensor, device: torch.device, dtype: torch.dtype) -> "AttackTensors":
        """D_tr and D_v on ``device`` in ``dtype``, with D_p⁰ = the points ``sources`` (indices into
        D_tr; :func:`draw_sources` draws the usual random ones)."""
        train = Dataset(data.train.x.to(device, dtype), data.train.y.to(device), data.num_classes, data.train.name,
                        data.train.bounds)
        val = Dataset(data.val.x.to(device, dtype), data.val.y.to(device), data.num_classes, data.val.name, data.val.bounds)
        srcd = sources.to(device)
        return AttackTensors(train, val, sources.clone(), train.x[srcd].clone(), train.y[srcd].clone())


def draw_sources(n_train: int, n_poison: int, generator: torch.Generator) -> torch.Tensor:
    """D_p⁰: a seeded random subset of ``n_poison`` distinct indices into D_tr (the thesis takes
    D_tr[0:εN]; D_tr is itself a seeded random permutation)."""
    return torch.randperm(n_train, generator=generator)[:n_poison]


@dataclass(frozen=True)
class Round:
    """One round of a bilevel attack: the clean batch, the poisons it carries, a validation batch."""

    clean: torch.Tensor  # (B,) indices into D_tr
    poison: torch.Tensor  # (b,) indices into the poison set (0..P-1)
    val: torch.Tensor  # (V,) indices into D_v


def epoch_rounds(n_train: int, n_poison: int, n_val: int, batch_size: int, val_batch_size: int | None,
                 poisons_per_batch: str, generator: torch.Generator) -> list[Round]:
    """The rounds of one attack epoch.

    The clean set is shuffled into batches of ``batch_size`` as in victim training.
    ``poisons_per_batch="proportional"``: the poisons are shuffled and split evenly over the
    batches, so each batch carries ≈ ε·B poisons — the proportion the victim sees when it
    retrains on D_tr ∪ D_p; ``"all"``: every batch carries every poison (the poisons then weigh
    P/(B+P) in f instead of ε/(1+ε)); ``"weighted"``: every batch carries every poison, weighted
    so that they weigh ε/(1+ε) (the expected batch loss). Validation batches cycle through a shuffled D_v
    (``val_batch_size=None``: all of D_v every round).
    """
    perm = torch.randperm(n_train, generator=generator)
    clean = list(torch.split(perm, batch_size))
    if poisons_per_batch in ("all", "weighted"):
        pois = [torch.arange(n_poison)] * len(clean)
    else:
        pois = list(torch.tensor_split(torch.randperm(n_poison, generator=generator), len(clean)))
    vperm = torch.randperm(n_val, generator=generator)
    rounds = []
    for b, c in enumerate(clean):
        if val_batch_size is None or val_batch_size >= n_val:
            v = vperm
        else:
            start = (b * val_batch_size) % n_val
            v = torch.roll(vperm, -start)[:val_batch_size]
        rounds.append(Round(c, pois[b], v))
    return rounds


# ---------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True, kw_only=True)
class CheckpointConfig:
    """Resumable checkpoints of a bilevel attack (option group ``checkpoint`` of tgda,
    back_gradient and min_max): the attack resumes from ``<dir>/checkpoint.safetensors`` when it is
    there, and refuses one made by another configuration or dataset. Where checkpoints go and how
    often has no effect on the poisons (a resumed run is byte-identical to an uninterrupted one).

    Attributes:
        dir: Directory of the checkpoint (created when missing); null: no checkpoints. Default null.
        every: Save after every ``every``-th finished epoch (an integer >= 1; the last epoch is
            always saved). Default 1.
    """

    dir: str | None = None
    every: int = 1

    def __post_init__(self) -> None:
        if self.dir is not None and not isinstance(self.dir, (str, os.PathLike)):
            raise ConfigError(f"checkpoint: dir must be a directory path or null, got {self.dir!r}")
        check_int(self.every, "every", "checkpoint")


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (config, sizes, a data digest) to refuse stale checkpoints."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def bounds_key(bounds: Bounds) -> tuple:
    """Fingerprint parts for the data's box: none for the pixel box [0, 1] (the fingerprints of
    before), else its JSON form — a checkpoint made for another box is refused."""
    return () if bounds.is_unit else (bounds.to_json(),)


class Checkpoint:
    """One file ``<dir>/checkpoint.safetensors`` (tensors + JSON metadata in its header), replaced
    atomically after every epoch, so an interrupted attack resumes from its last finished epoch.

    ``load`` returns ``None`` when there is no checkpoint and raises :class:`ConfigError` when the
    checkpoint belongs to another configuration (its fingerprint differs).
    """

    FILE = "checkpoint.safetensors"

    def __init__(self, directory: str | os.PathLike | None, fp: str, every: int = 1) -> None:
        self.dir = Path(directory) if directory else None
        self.fp = fp
        self.every = every

    @staticmethod
    def of(cfg: CheckpointConfig, fp: str) -> "Checkpoint":
        """The checkpoint the option group ``cfg`` asks for, for the configuration fingerprint ``fp``."""
        return Checkpoint(cfg.dir, fp, cfg.every)

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether to save after ``epochs_done`` of ``epochs`` epochs (every ``every``-th, and the last)."""
        return self.dir is not None and (epochs_done % self.every == 0 or epochs_done == epochs)

    def save(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{self.FILE}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"fingerprint": self.fp, "meta": json.dumps(meta)})
        os.replace(tmp, self.dir / self.FILE)

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        if self.dir is None or not (self.dir / self.FILE).is_file():
            return None
        path = str(self.dir / self.FILE)
        with safe_open(path, framework="pt") as fh:
            header = fh.metadata() or {}
        if header.get("fingerprint") != self.fp:
            raise ConfigError(f"checkpoint {path} belongs to another attack configuration or dataset; "
                              "delete it or choose another checkpoint directory")
        return load_file(path), json.loads(header.get("meta", "{}"))


def pack(prefix: str, tensors: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{i}": t for i, t in enumerate(tensors)}


def unpack(prefix: str, state: dict[str, torch.Tensor], like: Sequence[torch.Tensor]) -> Params:
    return tuple(state[f"{prefix}.{i}"].to(t.device, t.dtype) for i, t in enumerate(like))


def optimizer_state(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors of an SGD/Adam state (``step``, ``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``)."""
    out: dict[str, torch.Tensor] = {}
    for i, p in enumerate(params):
        for k, v in opt.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                out[f"opt.{i}.{k}"] = v
            elif v is not None:
                out[f"opt.{i}.{k}"] = torch.tensor(float(v))
    return out


def load_optimizer_state(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    for i, p in enumerate(params):
        prefix = f"opt.{i}."
        entries = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if entries:
            opt.state[p] = {k: v.to(p.device) if v.ndim else v.clone() for k, v in entries.items()}


def epoch_generator(base_seed: int, epoch: int) -> torch.Generator:
    """The batch-order generator of one epoch: depends only on (base seed, epoch), so an attack
    resumed at epoch e draws exactly the batches an uninterrupted run would have drawn."""
    return torch_generator(base_seed, f"bilevel-epoch-{epoch}")


def chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


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


# ---------------------------------------------------------------------------- direct-variable game loop
@dataclass(frozen=True, kw_only=True)
class DirectGameConfig(AttackConfig):
    """Options shared by the attacks that optimise poison inputs directly in the game of
    :func:`direct_attack` (back_gradient, min_max); each attack sets its own ``leader_lr`` and
    ``labels`` defaults, adds its leader's options and names itself in ``WHAT`` (for messages).

    Attributes:
        epochs: Passes over D_tr (an integer >= 0). Default 10.
        n: Follower SGD steps per round (0: the follower stays at the clean victim). Default 1.
        leader_lr: α, the signed step on the poison inputs, in the data's units. Required (each
            attack sets its default).
        follower_lr: β, the follower's SGD step; null: the victim recipe's learning rate. Default null.
        batch_size: Clean D_tr points per round; null: the victim recipe's batch size. Default null.
        labels: The poisons' labels, set once: ``"flip"`` (y ← C−1−y), ``"keep"`` or ``"max_loss"``
            (the class the clean model finds least likely). Required (each attack sets its default).
        dtype: Working precision, ``"float32"`` or ``"float64"``. Default ``"float32"``.
        checkpoint: Resumable checkpoints (:class:`CheckpointConfig`: ``-A checkpoint.dir=DIR``).
            Default its defaults (none).
    """

    WHAT: ClassVar[str] = "attack"

    epochs: int = 10
    n: int = 1
    leader_lr: float
    follower_lr: float | None = None
    batch_size: int | None = None
    labels: str
    dtype: str = "float32"
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", self.WHAT, minimum=0)
        check_int(self.n, "n", self.WHAT, minimum=0)
        check_steps(self, self.WHAT)
        check_choice(self.labels, "labels", LABEL_RULES, self.WHAT)
        check_group(self.checkpoint, CheckpointConfig, "checkpoint", self.WHAT)


@dataclass(frozen=True)
class DirectSetup:
    """Where the direct-variable game starts (:func:`direct_setup`)."""

    base_seed: int
    T: AttackTensors
    fol: Follower
    w_pre: Params  # the clean victim's weights
    y_poison: torch.Tensor  # (P,) the poisons' labels, set once
    follower_lr: float
    batch_size: int
    fopt: FollowerOptimizer  # the recipe's optimiser at follower_lr, its state carried across rounds


def direct_game(
    *,
    name: str,
    fol: Follower,
    fopt: FollowerOptimizer,
    w_pre: Params,
    T: AttackTensors,
    y_poison: torch.Tensor,
    leader_step: Callable[[Params, Round, torch.Tensor], torch.Tensor],
    epochs: int,
    n: int,
    batch_size: int,
    val_batch_size: int | None,
    base_seed: int,
    checkpoint: Checkpoint,
    progress: bool,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Gradient descent-ascent on directly optimised poison inputs (back_gradient, min_max).

    Each round (one clean batch with its ≈ε·B poisons): ``leader_step(w, round, x_p)`` returns the
    round's poisons moved by the leader (rows ``round.poison`` of the (P, *input_shape) tensor),
    projected onto the data's bounds, then the follower takes ``n`` steps of the recipe's optimiser
    ``fopt`` (:func:`follower_steps`; its state is carried across rounds and checkpointed) on the
    clean batch ∪ those poisons. Resumable per epoch. Returns (final poison inputs, diagnostics).
    """
    bounds = T.train.bounds
    xp_all = T.x0.clone()
    w = w_pre
    n_eval = min(len(T.val), 5000)
    eval_set = Dataset(T.val.x[:n_eval], T.val.y[:n_eval], T.val.num_classes)
    info: dict[str, Any] = {"val_loss": [fol.mean_loss(w, eval_set)], "val_accuracy": [fol.accuracy(w, eval_set)]}
    start = 0
    state = checkpoint.load()
    if state is not None:
        tensors, meta = state
        xp_all = tensors["xp"].to(T.x0.device, T.x0.dtype)
        w = unpack("w", tensors, w_pre)
        start, info = int(meta["epoch"]), meta["info"]
        fopt.load_state(tensors, meta.get("follower_state", {}), w_pre)
    seconds = 0.0
    bar = tqdm(range(start, epochs), desc=name, disable=not progress, unit="ep", initial=start, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        for r in epoch_rounds(len(T.train), len(xp_all), len(T.val), batch_size, val_batch_size, "proportional",
                              epoch_generator(base_seed, epoch)):
            xc, yc = T.train.x[r.clean], T.train.y[r.clean]
            if len(r.poison):
                xp_all[r.poison] = bounds.clamp(leader_step(w, r, xp_all[r.poison]).detach())
            if n:
                xp, yp = xp_all[r.poison], y_poison[r.poison]
                w = follower_steps(fopt, partial(fol.mixed_loss, xc=xc, yc=yc, xp=xp, yp=yp), w, n)
        seconds += time.perf_counter() - t0
        info["val_loss"].append(fol.mean_loss(w, eval_set))
        info["val_accuracy"].append(fol.accuracy(w, eval_set))
        bar.set_postfix(val_loss=f"{info['val_loss'][-1]:.4f}")
        if checkpoint.due(epoch + 1, epochs):
            opt_tensors, opt_meta = fopt.state()
            checkpoint.save({"xp": xp_all, **pack("w", w), **opt_tensors},
                            {"epoch": epoch + 1, "info": info, "follower_state": opt_meta})
    info["seconds_per_epoch"] = seconds / max(epochs - start, 1)
    return xp_all, info


def direct_setup(cfg: DirectGameConfig, data: AttackData, victim: Victim, n_poison: int,
                 generator: torch.Generator) -> DirectSetup:
    """The shared start of the attacks that optimise poison inputs directly (back_gradient, min_max).

    The generator is drawn in a fixed order (base seed, then the poison sources) so results do not
    depend on the caller.
    """
    dtype = DTYPES[cfg.dtype]
    base = draw_seed(generator)
    T = AttackTensors.build(data, draw_sources(len(data.train), n_poison, generator), victim.device, dtype)
    fol, w_pre = Follower.from_model(victim.clean_model(), dtype)
    yp_all = initial_labels(cfg.labels, T.y0, data.num_classes, fol, w_pre, T.x0)
    beta = cfg.follower_lr if cfg.follower_lr is not None else victim.spec.recipe.lr
    bs = cfg.batch_size or victim.spec.recipe.batch_size or len(T.train)
    return DirectSetup(base, T, fol, w_pre, yp_all, beta, bs,
                       FollowerOptimizer.for_recipe(victim.spec.recipe, fol.step_sizes(beta)))


def direct_attack(
    name: str,
    cfg: DirectGameConfig,
    data: AttackData,
    victim: Victim,
    n_poison: int,
    generator: torch.Generator,
    leader_step: Callable[[DirectSetup, Params, Round, torch.Tensor], torch.Tensor],
    *,
    val_batch_size: int | None,
    key: tuple = (),
    progress: bool,
) -> PoisonSet:
    """The poisons of an attack that optimises poison inputs directly (back_gradient, min_max):
    :func:`direct_setup`, then :func:`direct_game` with ``leader_step(setup, w, round, x_p)``.

    The checkpoint's fingerprint holds ``name``, the options but ``epochs`` and ``checkpoint``, the
    budget, ``key``, the base seed, the data, the victim's model and the data's box;
    ``info["follower"]`` says how the follower (the recipe's optimiser) relates to the victim's recipe.
    """
    s = direct_setup(cfg, data, victim, n_poison, generator)
    follower = follower_note(victim.spec.recipe, s.follower_lr, cfg.WHAT, modelled=True)
    resumable = {k: v for k, v in config_to_dict(cfg).items() if k not in ("epochs", "checkpoint")}
    fp = fingerprint(name, resumable, n_poison, *key, s.base_seed,
                     tensor_fingerprint(data.train.x, data.train.y, data.val.x, data.val.y), victim.spec.model,
                     *bounds_key(data.bounds))
    x, info = direct_game(name=name, fol=s.fol, fopt=s.fopt, w_pre=s.w_pre, T=s.T, y_poison=s.y_poison,
                          leader_step=lambda w, r, xp: leader_step(s, w, r, xp), epochs=cfg.epochs, n=cfg.n,
                          batch_size=s.batch_size, val_batch_size=val_batch_size,
                          base_seed=s.base_seed, checkpoint=Checkpoint.of(cfg.checkpoint, fp), progress=progress)
    info["follower"] = follower
    return PoisonSet(x.to("cpu", torch.float32), s.y_poison.cpu(), s.T.source_index, info)
