"""The shared game loop of the bilevel attacks (bilevel/game_loop.py): resume equivalence, the hooks'
order, the evaluation and checkpoint cadence on a toy game, and that tgda, back_gradient and min_max
all run on it (with the checkpoint layout of before)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from poisonlab.attacks import bilevel as B
from poisonlab.attacks import build_attack
from poisonlab.data import AttackData, load_dataset
from poisonlab.data.types import Dataset
from poisonlab.seeding import torch_generator
from poisonlab.training import TrainConfig, Victim, VictimSpec

TIMING = ("seconds_per_epoch", "selection_seconds")


def _digits(n_train: int = 120, n_val: int = 60) -> AttackData:
    b = load_dataset("digits")
    return AttackData(b.train.subset(torch.arange(n_train)), b.train.subset(torch.arange(n_train, n_train + n_val)))


class _SGDGame(B.Game):
    """A follower taking one SGD step per round on its clean batch; records the loop's calls."""

    def __init__(self, data: AttackData) -> None:
        super().__init__({"begun": 0, "ended": []})
        torch.manual_seed(0)
        self.fol, self._w = B.Follower.from_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.float64)
        self.x, self.y = data.train.x.double(), data.train.y
        self.played: list[tuple[int, int]] = []

    @property
    def w(self) -> tuple[torch.Tensor, ...]:
        return self._w

    def play(self, epoch: int, index: int, r: B.Round) -> None:
        self.played.append((epoch, index))
        self._w = B.sgd_steps(lambda ws: self.fol.loss(ws, self.x[r.clean], self.y[r.clean]), self._w, 0.5, 1)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return B.pack("w", self._w), {}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self._w = B.unpack("w", tensors, self._w)

    def begin(self) -> None:
        self.info["begun"] += 1

    def end_epoch(self, epochs_done: int) -> None:
        self.info["ended"].append(epochs_done)


def _play(data: AttackData, epochs: int, ckpt: B.Checkpoint, log_every: int = 1, game: _SGDGame | None = None) -> _SGDGame:
    game = game or _SGDGame(data)
    schedule = B.EpochSchedule(len(data.train), 0, len(data.val), 40, None, "proportional", 7)
    B.run_game(game, desc="toy", epochs=epochs, schedule=schedule,
               evaluation=B.Evaluation.of(game.fol, _double(data.val), log_every),
               checkpoint=ckpt, progress=False)
    return game


def _double(d: Dataset) -> Dataset:
    return Dataset(d.x.double(), d.y, d.num_classes)


def _strip(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in TIMING}


def test_a_resumed_toy_game_equals_the_uninterrupted_one(tmp_path):
    data = _digits()
    full = _play(data, 4, B.Checkpoint(None, "fp"))
    ck = B.Checkpoint(tmp_path / "ck", "fp")
    _play(data, 2, ck)
    resumed = _play(data, 4, ck)
    assert all(torch.equal(a, b) for a, b in zip(full.w, resumed.w))
    assert _strip(full.info) == _strip(resumed.info)
    assert resumed.info["begun"] == 1 and resumed.info["ended"] == [1, 2, 3, 4]  # begin only on the fresh start
    assert {e for e, _ in resumed.played} == {2, 3} and len(full.played) == 4 * 3  # 120 points, batches of 40
    assert len(full.info["val_loss"]) == 5 and full.info["seconds_per_epoch"] > 0
    again = _play(data, 4, ck)  # a checkpoint of the last epoch: nothing left to play
    assert again.played == [] and again.info["seconds_per_epoch"] == 0.0 and _strip(again.info) == _strip(full.info)


def test_the_loop_judges_every_log_every_epochs_and_the_last():
    data = _digits()
    game = _play(data, 5, B.Checkpoint(None, "fp"), log_every=2)
    assert len(game.info["val_loss"]) == len(game.info["val_accuracy"]) == 4  # the start, epochs 2, 4 and 5
    assert game.info["val_loss"][0] == pytest.approx(game.fol.mean_loss(_SGDGame(data).w, _double(data.val)))


@pytest.mark.parametrize("at_start, expected", [(False, [2, 4, 5]), (True, [0, 2, 4, 5])])
def test_checkpoints_every_kth_epoch_the_last_and_the_start_when_the_game_asks(tmp_path, monkeypatch, at_start, expected):
    saved: list[int] = []
    save = B.Checkpoint.save
    monkeypatch.setattr(B.Checkpoint, "save", lambda self, t, meta: saved.append(meta["epoch"]) or save(self, t, meta))
    data = _digits()
    game = _SGDGame(data)
    monkeypatch.setattr(game, "checkpoint_start", at_start)
    _play(data, 5, B.Checkpoint(tmp_path / "ck", "fp", every=2), game=game)
    assert saved == expected


# ---------------------------------------------------------------------------- the attacks on the loop
TINY = {
    "tgda": {"n": 2, "pretrain.epochs": 1, "solver.iters": 5, "generator_options": {"hidden": [32, 16]},
             "selection.every": 2, "leader_optimizer": "adam", "leader_lr": 0.01},  # adam: a leader state to checkpoint
    "back_gradient": {"k": 2},
    "min_max": {},
}
LAYOUT = {"tgda": {"theta", "w", "solve", "best", "opt"}, "back_gradient": {"xp", "w"}, "min_max": {"xp", "w"}}


def _victim(data: AttackData) -> Victim:
    spec = VictimSpec("lr", (1, 8, 8), 10, TrainConfig(epochs=5, batch_size=40, device="cpu"))
    clean = spec.train(data.train, 0)
    return Victim(spec, 0, {k: v.clone() for k, v in clean.state_dict().items()})


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_bilevel_game_runs_on_the_loop_and_resumes_to_the_same_info(name, tmp_path, monkeypatch):
    games: list[str] = []
    epochs: list[int] = []
    init, rounds = B.Game.__init__, B.EpochSchedule.rounds
    monkeypatch.setattr(B.Game, "__init__", lambda self, info: games.append(type(self).__name__) or init(self, info))
    monkeypatch.setattr(B.EpochSchedule, "rounds", lambda self, epoch: epochs.append(epoch) or rounds(self, epoch))
    data = _digits()
    victim = _victim(data)

    def run(n_epochs: int, ck: str | None = None):
        opts = dict(TINY[name], epochs=n_epochs, **({"checkpoint.dir": ck} if ck else {}))
        return build_attack(name, opts).poison(data, victim, 0.05, generator=torch_generator(5, "a"))

    full = run(4)
    assert games == ["_TGDAGame" if name == "tgda" else "_DirectGame"] and epochs == [0, 1, 2, 3]
    ck = str(tmp_path / "ck")
    run(2, ck)
    with safe_open(f"{ck}/{B.Checkpoint.FILE}", framework="pt") as fh:  # the checkpoint layout of before
        meta_keys = set(json.loads(fh.metadata()["meta"]))
    assert {k.split(".")[0] for k in load_file(f"{ck}/{B.Checkpoint.FILE}")} == LAYOUT[name]
    assert meta_keys == {"epoch", "info", "follower_state"}
    epochs.clear()
    resumed = run(4, ck)
    assert epochs == [2, 3]  # the resumed run plays only the epochs left
    assert torch.equal(full.x, resumed.x) and torch.equal(full.y, resumed.y)
    assert _strip(full.info) == _strip(resumed.info) and len(full.info["val_loss"]) == 5
