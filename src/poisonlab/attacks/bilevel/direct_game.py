"""The direct-variable game: gradient descent-ascent on the poison inputs themselves (back_gradient, min_max)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, ClassVar

import torch

from ...autodiff import Params
from ...cache import tensor_fingerprint
from ...data.types import AttackData, PoisonSet
from ...options import config_to_dict
from ...seeding import draw_seed
from ...training.victim import Victim
from ...validation import check_choice, check_int
from ..base import AttackConfig
from .checkpoint import Checkpoint, CheckpointConfig, bounds_key, fingerprint, pack, unpack
from .checks import DTYPES, check_group, check_steps
from .follower import LABEL_RULES, Follower, follower_note, follower_steps, initial_labels
from .game_loop import EpochSchedule, Evaluation, Game, run_game
from .optimizer import FollowerOptimizer
from .schedule import Round
from .tensors import AttackTensors, draw_sources


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


class _DirectGame(Game):
    """The direct-variable game on :func:`run_game`: the poison inputs (P, *input_shape) and the
    follower's w with its optimiser's state, checkpointed as ``xp``, ``w.*`` and the optimiser's
    tensors (plus ``follower_state`` in the metadata)."""

    def __init__(self, *, fol: Follower, fopt: FollowerOptimizer, w_pre: Params, T: AttackTensors,
                 y_poison: torch.Tensor, leader_step: Callable[[Params, Round, torch.Tensor], torch.Tensor],
                 n: int) -> None:
        super().__init__({})
        self.fol, self.fopt, self.w_pre, self.T, self.y_poison = fol, fopt, w_pre, T, y_poison
        self.leader_step, self.n = leader_step, n
        self.xp_all = T.x0.clone()
        self._w = w_pre

    @property
    def w(self) -> Params:
        return self._w

    def play(self, epoch: int, index: int, r: Round) -> None:
        """The leader's step on the round's poisons (projected onto the data's bounds), then ``n``
        follower steps on the clean batch ∪ those poisons."""
        T = self.T
        xc, yc = T.train.x[r.clean], T.train.y[r.clean]
        if len(r.poison):
            self.xp_all[r.poison] = T.train.bounds.clamp(self.leader_step(self._w, r, self.xp_all[r.poison]).detach())
        if self.n:
            xp, yp = self.xp_all[r.poison], self.y_poison[r.poison]
            self._w = follower_steps(self.fopt, partial(self.fol.mixed_loss, xc=xc, yc=yc, xp=xp, yp=yp), self._w, self.n)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        opt_tensors, opt_meta = self.fopt.state()
        return {"xp": self.xp_all, **pack("w", self._w), **opt_tensors}, {"follower_state": opt_meta}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.xp_all = tensors["xp"].to(self.T.x0.device, self.T.x0.dtype)
        self._w = unpack("w", tensors, self.w_pre)
        self.fopt.load_state(tensors, meta.get("follower_state", {}), self.w_pre)


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
    clean batch ∪ those poisons. Runs on :func:`run_game` (resumable per epoch, the follower judged
    on D_v every epoch). Returns (final poison inputs, diagnostics).
    """
    game = _DirectGame(fol=fol, fopt=fopt, w_pre=w_pre, T=T, y_poison=y_poison, leader_step=leader_step, n=n)
    schedule = EpochSchedule(len(T.train), len(T.x0), len(T.val), batch_size, val_batch_size, "proportional", base_seed)
    info = run_game(game, desc=name, epochs=epochs, schedule=schedule, evaluation=Evaluation.of(fol, T.val),
                    checkpoint=checkpoint, progress=progress)
    return game.xp_all, info


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
