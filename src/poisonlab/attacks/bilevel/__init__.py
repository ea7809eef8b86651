"""Shared machinery of the bilevel attacks (tgda, back_gradient, metapoison, min_max, i_min_max).

Not an attack itself (no registry key). Everything here is plumbing around the one second-order
engine in :mod:`poisonlab.autodiff`, one module per mechanism:

* :mod:`.follower` — the follower F as a *functional* network (parameters ``w``, a tuple of
  tensors, plus the module used by ``torch.func.functional_call``), its cross-entropy losses on
  (clean ⊕ poison) batches, its steps (:func:`sgd_steps`, :func:`follower_steps`,
  :func:`follower_lookahead`), the note on how it relates to the victim's recipe
  (:func:`follower_note`) and the labels of direct-variable poisons (:func:`initial_labels`);
* :mod:`.optimizer` — the recipe's optimiser written functionally (:class:`FollowerOptimizer`:
  momentum, Adam/AdamW moments, weight decay);
* :mod:`.schedule` — the per-round batch schedule (which clean, poison and validation points a
  round sees: :class:`Round`, :func:`epoch_rounds`, :func:`epoch_generator`);
* :mod:`.tensors` — D_tr, D_v and the poison sources on the attack's device (:class:`AttackTensors`);
* :mod:`.checkpoint` — resumable checkpoints (safetensors + a JSON fingerprint, never pickle);
* :mod:`.game_loop` — the epoch loop every resumable game runs on (:func:`run_game` with a
  :class:`Game`: resume, epoch bar, rounds, timing, D_v evaluation, checkpoints; tgda,
  back_gradient, min_max);
* :mod:`.direct_game` — the game of the attacks that optimise poison inputs directly
  (:func:`direct_attack`: back_gradient, min_max);
* :mod:`.checks` — the step, batch and precision option checks they share.

Shapes: inputs ``(N, *input_shape)`` — images ``(N, C, H, W)``, features ``(N, d)`` — inside the
data's bounds (``T.train.bounds``; every projection of a poison uses them), labels ``(N,)`` int64,
``w`` a tuple of parameter tensors shaped like the victim's ``named_parameters()``. Leader step
sizes are in the data's units.
"""

from .checkpoint import (
    Checkpoint,
    CheckpointConfig,
    bounds_key,
    fingerprint,
    load_optimizer_state,
    optimizer_state,
    pack,
    unpack,
)
from .checks import DTYPES, check_dtype, check_group, check_steps
from .direct_game import DirectGameConfig, DirectSetup, direct_attack, direct_game, direct_setup
from .follower import (
    LABEL_RULES,
    Follower,
    follower_description,
    follower_lookahead,
    follower_note,
    follower_steps,
    initial_labels,
    recipe_is_plain_sgd,
    sgd_steps,
)
from .game_loop import EpochSchedule, Evaluation, Game, run_game
from .optimizer import FollowerOptimizer
from .schedule import Round, chunks, epoch_generator, epoch_rounds
from .tensors import AttackTensors, draw_sources

__all__ = [
    "DTYPES", "LABEL_RULES", "AttackTensors", "Checkpoint", "CheckpointConfig", "DirectGameConfig", "DirectSetup",
    "EpochSchedule", "Evaluation", "Follower", "FollowerOptimizer", "Game", "Round", "bounds_key", "check_dtype",
    "check_group", "check_steps", "chunks", "direct_attack", "direct_game", "direct_setup", "draw_sources",
    "epoch_generator", "epoch_rounds", "fingerprint", "follower_description", "follower_lookahead", "follower_note",
    "follower_steps", "initial_labels", "load_optimizer_state", "optimizer_state", "pack", "recipe_is_plain_sgd",
    "run_game", "sgd_steps", "unpack",
]
