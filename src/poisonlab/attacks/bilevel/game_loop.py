"""The epoch loop every resumable bilevel game runs on (tgda, back_gradient, min_max).

:func:`run_game` owns what the games share: resuming from a :class:`~.checkpoint.Checkpoint`, the
epoch bar, the rounds of each epoch (:class:`EpochSchedule`), the per-epoch timing
(``info["seconds_per_epoch"]``), the follower's D_v diagnostics (:class:`Evaluation`:
``info["val_loss"]``, ``info["val_accuracy"]``) and the checkpoints at epoch ends. A :class:`Game`
says what differs: one round's moves, what goes into and comes out of a checkpoint, the work of a
fresh start and the extras of an epoch's end.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from ...autodiff import Params
from ...data.types import Dataset
from .checkpoint import Checkpoint
from .follower import Follower
from .schedule import Round, epoch_generator, epoch_rounds


@dataclass(frozen=True)
class EpochSchedule:
    """What :func:`epoch_rounds` needs to draw the rounds of any epoch: the sizes of D_tr, of the
    poison set and of D_v, the clean and validation batch sizes, how poisons are spread over the
    batches (``poisons_per_batch``) and the base seed the epoch's generator derives from."""

    n_train: int
    n_poison: int
    n_val: int
    batch_size: int
    val_batch_size: int | None
    poisons_per_batch: str
    base_seed: int

    def rounds(self, epoch: int) -> list[Round]:
        """The rounds of epoch ``epoch`` (0-based); the same for a resumed and an uninterrupted run."""
        return epoch_rounds(self.n_train, self.n_poison, self.n_val, self.batch_size, self.val_batch_size,
                            self.poisons_per_batch, epoch_generator(self.base_seed, epoch))


@dataclass(frozen=True)
class Evaluation:
    """The follower's diagnostics on (the first ≤ 5000 points of) D_v: its mean loss and accuracy,
    appended to ``info["val_loss"]`` and ``info["val_accuracy"]`` at the start and after every
    ``every``-th epoch (and the last)."""

    fol: Follower
    points: Dataset
    every: int = 1

    MAX_POINTS: ClassVar[int] = 5000

    @staticmethod
    def of(fol: Follower, val: Dataset, every: int = 1) -> "Evaluation":
        n = min(len(val), Evaluation.MAX_POINTS)
        return Evaluation(fol, Dataset(val.x[:n], val.y[:n], val.num_classes), every)

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether the follower is judged after ``epochs_done`` of ``epochs`` epochs."""
        return epochs_done % self.every == 0 or epochs_done == epochs

    def record(self, w: Params, info: dict[str, Any]) -> None:
        info.setdefault("val_loss", []).append(self.fol.mean_loss(w, self.points))
        info.setdefault("val_accuracy", []).append(self.fol.accuracy(w, self.points))


class Game(ABC):
    """What one bilevel game adds to :func:`run_game`. A game holds its own state (the leader's
    variables, the follower's weights and optimiser) and changes it in place.

    ``info`` is the diagnostics dict that :func:`run_game` fills and checkpoints (JSON-able): a game
    creates it with its own keys, and reads it again after a resume (where it holds the
    checkpoint's copy).
    """

    #: checkpoint a fresh start before the first epoch (when :meth:`begin` does costly work)
    checkpoint_start: ClassVar[bool] = False

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info

    @property
    @abstractmethod
    def w(self) -> Params:
        """The follower's current weights (what :class:`Evaluation` judges)."""

    @abstractmethod
    def play(self, epoch: int, index: int, r: Round) -> None:
        """Round ``index`` (0-based) of epoch ``epoch`` (0-based), on the points ``r`` names."""

    @abstractmethod
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The game's state for a checkpoint: its tensors and the metadata entries other than
        ``epoch`` and ``info`` (which :func:`run_game` adds)."""

    @abstractmethod
    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Resume from a checkpoint's tensors and metadata (``info`` already holds the checkpoint's)."""

    def begin(self) -> None:
        """The work of a fresh start, after the first evaluation (not called on a resume). Default: none."""
        return None

    def end_epoch(self, epochs_done: int) -> None:
        """After the epoch's rounds and its evaluation (when due), before its checkpoint. Default: nothing."""
        return None

    def postfix(self) -> dict[str, str]:
        """Entries the epoch bar shows beside ``val_loss`` after an evaluation."""
        return {}


def run_game(game: Game, *, desc: str, epochs: int, schedule: EpochSchedule, evaluation: Evaluation,
             checkpoint: Checkpoint, progress: bool) -> dict[str, Any]:
    """Play ``game`` for ``epochs`` epochs, resuming from ``checkpoint`` when it holds one.

    A fresh start judges the follower (:class:`Evaluation`), calls :meth:`Game.begin` and, when the
    game asks for it, saves a checkpoint at epoch 0. Every epoch: the rounds of
    ``schedule.rounds(epoch)``, each by :meth:`Game.play`, then the evaluation when due,
    :meth:`Game.end_epoch` and a checkpoint when due. Returns ``game.info`` with
    ``seconds_per_epoch`` (the rounds' time over the epochs this call ran).
    """
    info = game.info
    state = checkpoint.load()
    if state is None:
        start = 0
        evaluation.record(game.w, info)
        game.begin()
        if game.checkpoint_start:
            _save(game, checkpoint, 0)
    else:
        tensors, meta = state
        start = int(meta["epoch"])
        info.update(meta["info"])
        game.load(tensors, meta)
    seconds = 0.0
    bar = tqdm(range(start, epochs), desc=desc, disable=not progress, unit="ep", initial=start, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        for i, r in enumerate(schedule.rounds(epoch)):
            game.play(epoch, i, r)
        seconds += time.perf_counter() - t0
        judged = evaluation.due(epoch + 1, epochs)
        if judged:
            evaluation.record(game.w, info)
        game.end_epoch(epoch + 1)
        if judged:
            bar.set_postfix(val_loss=f"{info['val_loss'][-1]:.4f}", **game.postfix())
        if checkpoint.due(epoch + 1, epochs):
            _save(game, checkpoint, epoch + 1)
    info["seconds_per_epoch"] = seconds / max(epochs - start, 1)
    return info


def _save(game: Game, checkpoint: Checkpoint, epoch: int) -> None:
    """Checkpoint ``game`` after ``epoch`` finished epochs (nothing without a checkpoint directory)."""
    if checkpoint.dir is None:
        return
    tensors, meta = game.state()
    checkpoint.save(tensors, {"epoch": epoch, "info": game.info, **meta})
