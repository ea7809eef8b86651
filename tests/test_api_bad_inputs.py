"""Every bad call through the public API is a clear poisonlab error, naming the problem, before any training.

Each case is one call of ``pl.*`` with one thing wrong. The test asserts the error's type, that its
message names the problem (a regular expression), and that it came before any training: the one
training loop (``VictimSpec.train``'s ``train``) is patched to fail the test if it is ever reached.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import poisonlab as pl
from poisonlab.errors import ConfigError, ContractError, DataError, UnknownNameError

D, C = 6, 2


def _arrays(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, D)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    return x, y


X, Y = _arrays()
DATA = pl.data_from_arrays(X, Y)


def good():
    return nn.Linear(D, C)


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        raise ValueError("hidden size must be even")


class _ForwardRaises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C)

    def forward(self, x):
        raise KeyError("no such feature 'age'")


class _Argmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C)

    def forward(self, x):
        return self.lin(x).argmax(1)


class _Tuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C)

    def forward(self, x):
        return self.lin(x), x


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C)

    def forward(self, x):
        return self.lin(x).detach()


class _NaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C)

    def forward(self, x):
        return self.lin(x) * float("nan")


class _NoParams(nn.Module):
    def forward(self, x):
        return x[:, :C]


class _Meta(nn.Module):
    """A parameter the recipe's .to(device) cannot move: ``to`` is overridden to do nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D, C, device="meta")

    def to(self, *args, **kwargs):
        return self


def _run(**kw):
    """pl.run with one argument replaced."""
    args = {"data": DATA, "victim": pl.victim(good, epochs=1), "attack": "label_flip", "fraction": 0.05}
    args.update(kw)
    return pl.run(args.pop("data"), args.pop("victim"), args.pop("attack"), args.pop("fraction"), progress=False, **args)


def _victim_run(factory):
    return lambda _tmp=None: _run(victim=pl.victim(factory, epochs=1))


def _poisons(x=None, y=None, n=3):
    return pl.PoisonSet(torch.rand(n, D) if x is None else x, torch.zeros(n, dtype=torch.int64) if y is None else y)


def _file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("not a directory")
    return f


# (case id, call taking tmp_path, expected error type, regex the message must match)
CASES = [
    # --- data_from_arrays: the arrays
    ("x strings", lambda t: pl.data_from_arrays(np.array([["a"] * D] * 50), Y[:50]), DataError, r"x_train.*numeric.*strings"),
    ("x object", lambda t: pl.data_from_arrays(np.array([[1, "b"]] * 50, dtype=object), Y[:50]), DataError, r"x_train.*object"),
    ("x ragged list", lambda t: pl.data_from_arrays([[1.0, 2.0], [3.0]], [0, 1]), DataError, r"x_train.*array"),
    ("x 1-D", lambda t: pl.data_from_arrays(X[:, 0], Y), DataError, r"x_train.*\(N, \*input_shape\)"),
    ("x bool", lambda t: pl.data_from_arrays(X > 0.5, Y), DataError, r"x_train.*real numeric.*bool"),
    ("x complex", lambda t: pl.data_from_arrays(X.astype(np.complex64), Y), DataError, r"x_train.*(real numeric|complex)"),
    ("x NaN", lambda t: pl.data_from_arrays(np.where(X > 0.9, np.nan, X), Y), DataError, r"x_train.*NaN"),
    ("x empty", lambda t: pl.data_from_arrays(np.zeros((0, D)), np.zeros(0)), DataError, r"x_train.*empty"),
    ("x outside bounds", lambda t: pl.data_from_arrays(X * 3, Y), DataError, r"outside the bounds"),
    ("y strings", lambda t: pl.data_from_arrays(X, np.array(["cat"] * len(X))), DataError, r"y_train.*strings"),
    ("y ragged", lambda t: pl.data_from_arrays(X[:2], [[0], [1, 2]]), DataError, r"y_train.*array"),
    ("y negative", lambda t: pl.data_from_arrays(X, Y - 1), DataError, r"y_train.*negative"),
    ("y fractional", lambda t: pl.data_from_arrays(X, Y + 0.5), DataError, r"y_train.*integers"),
    ("y one class", lambda t: pl.data_from_arrays(X, np.zeros(len(X))), DataError, r"one class"),
    ("y wrong length", lambda t: pl.data_from_arrays(X, Y[:-1]), DataError, r"labels for .* inputs"),
    ("y matrix", lambda t: pl.data_from_arrays(X, np.stack([Y, Y], 1)), DataError, r"vector"),
    ("x_test alone", lambda t: pl.data_from_arrays(X, Y, X), DataError, r"x_test and y_test"),
    ("x_test shape", lambda t: pl.data_from_arrays(X, Y, X[:, :3], Y), DataError, r"input shapes differ"),
    ("y_test negative", lambda t: pl.data_from_arrays(X, Y, X, -Y - 1), DataError, r"y_test.*negative"),
    ("num_classes too small", lambda t: pl.data_from_arrays(X, Y * 2, num_classes=2), DataError, r"labels must be in 0\.\.1"),
    ("num_classes 1", lambda t: pl.data_from_arrays(X, Y, num_classes=1), DataError, r"num_classes.*>= 2"),
    ("val_fraction", lambda t: pl.data_from_arrays(X, Y, val_fraction=1.5), DataError, r"val_fraction"),
    # --- victim(): the recipe and the model argument
    ("optimizer", lambda t: pl.victim(good, optimizer="rmsprop"), ConfigError, r"optimizer.*rmsprop"),
    ("lr negative", lambda t: pl.victim(good, lr=-1.0), ConfigError, r"lr"),
    ("epochs negative", lambda t: pl.victim(good, epochs=-1), ConfigError, r"epochs"),
    ("batch_size 0", lambda t: pl.victim(good, batch_size=0), ConfigError, r"batch_size"),
    ("momentum 1.5", lambda t: pl.victim(good, momentum=1.5), ConfigError, r"momentum"),
    ("schedule", lambda t: pl.victim(good, schedule="linear"), ConfigError, r"schedule"),
    ("device cuda on cpu torch", lambda t: _run(victim=pl.victim(good, device="cuda:0")), ConfigError, r"device='cuda:0'"),
    ("device garbage", lambda t: _run(victim=pl.victim(good, device="gpu-please")), ConfigError, r"device='gpu-please'"),
    ("model unknown", lambda t: pl.victim("transformer-xxl"), UnknownNameError, r"transformer-xxl"),
    ("model instance", lambda t: pl.victim(nn.Linear(D, C)), ConfigError, r"callable that returns a fresh module"),
    ("model number", lambda t: pl.victim(42), ConfigError, r"registered name or a callable"),
    ("options on factory", lambda t: pl.victim(good, options={"hidden": [3]}), ConfigError, r"options"),
    ("registered model option", lambda t: _run(victim=pl.victim("nn", options={"hidden": [-3]}, epochs=1)), ConfigError, r"hidden"),
    # --- the model, checked on one batch before training
    ("logits != classes", _victim_run(lambda: nn.Linear(D, 3)), ConfigError, r"shape \(2, 3\).*expected logits \(2, 2\)"),
    ("wrong input width", _victim_run(lambda: nn.Linear(D + 4, C)), ConfigError, r"failed on one input batch of shape \(2, 6\)"),
    ("output rank", _victim_run(lambda: nn.Sequential(nn.Linear(D, C), nn.Flatten(0))), ConfigError, r"shape \(4,\)"),
    ("factory raises", _victim_run(_Raises), ConfigError, r"_Raises.*ValueError.*hidden size"),
    ("forward raises", _victim_run(_ForwardRaises), ConfigError, r"failed on one input batch.*KeyError"),
    ("integer output", _victim_run(_Argmax), ConfigError, r"torch.int64.*floating-point logits"),
    ("tuple output", _victim_run(_Tuple), ConfigError, r"returned tuple"),
    ("detached output", _victim_run(_Detached), ConfigError, r"do not depend on any trainable parameter"),
    ("NaN output", _victim_run(_NaN), ConfigError, r"non-finite logits"),
    ("no parameters", _victim_run(_NoParams), ConfigError, r"no trainable parameters"),
    ("parameter elsewhere", _victim_run(_Meta), ConfigError, r"still has parameter lin.weight on meta"),
    ("factory returns non-module", _victim_run(lambda: "a model"), ConfigError, r"must return a torch.nn.Module"),
    # --- pl.run / pl.poison arguments
    ("fraction > 1", lambda t: _run(fraction=1.5), ConfigError, r"fraction.*\[0, 1\]"),
    ("fraction string", lambda t: _run(fraction="0.1"), ConfigError, r"fraction"),
    ("seed negative", lambda t: _run(seed=-1), ConfigError, r"seed"),
    ("attack unknown", lambda t: _run(attack="napalm"), UnknownNameError, r"napalm"),
    ("attack option unknown", lambda t: _run(options={"no_such_option": 1}), ConfigError, r"no_such_option"),
    ("injection", lambda t: _run(injection="swap"), ConfigError, r"injection"),
    ("defense unknown", lambda t: _run(defense="moat"), UnknownNameError, r"moat"),
    ("data wrong type", lambda t: _run(data=[[1, 2]]), ConfigError, r"data must come from"),
    ("dataset unknown", lambda t: _run(data="imagenet-22k"), UnknownNameError, r"imagenet-22k"),
    ("victim wrong type", lambda t: _run(victim=3.5), ConfigError, r"victim must come from"),
    ("out is a file", lambda t: _run(out=_file(t)), ConfigError, r"out: .*exists and is not a directory"),
    ("out under a file", lambda t: _run(out=_file(t) / "run"), ConfigError, r"out: cannot make .* is a file"),
    ("cache is a file", lambda t: _run(cache=_file(t)), ConfigError, r"cache: .*exists and is not a directory"),
    ("poison fraction", lambda t: pl.poison(DATA, pl.victim(good, epochs=1), "label_flip", -0.1, progress=False),
     ConfigError, r"fraction"),
    ("poison cache object", lambda t: pl.poison(DATA, pl.victim(good, epochs=1), "label_flip", 0.05, cache=3, progress=False),
     ConfigError, r"cache must be"),
    # --- pl.defend / pl.threshold
    ("defend poisons shape", lambda t: pl.defend(DATA, _poisons(x=torch.rand(3, D + 1)), pl.victim(good, epochs=1), "loss"),
     ContractError, r"inputs of shape \(7,\)"),
    ("defend poison labels", lambda t: pl.defend(DATA, _poisons(y=torch.tensor([0, 1, 5])), pl.victim(good, epochs=1), "loss"),
     ContractError, r"labels outside 0\.\.1"),
    ("defend poisons outside box", lambda t: pl.defend(DATA, _poisons(x=torch.full((3, D), 2.0)), pl.victim(good, epochs=1), "loss"),
     ContractError, r"outside the data's bounds"),
    ("defend unknown", lambda t: pl.defend(DATA, _poisons(), pl.victim(good, epochs=1), "moat"), UnknownNameError, r"moat"),
    ("defend wrong module", lambda t: pl.defend(DATA, _poisons(), pl.victim(lambda: nn.Linear(D, 5), epochs=1), "loss"),
     ConfigError, r"expected logits"),
    ("threshold fraction", lambda t: pl.threshold(DATA, pl.victim("lr", epochs=1), "gradpc", fraction=2.0), ConfigError, r"fraction"),
    ("threshold target unknown", lambda t: pl.threshold(DATA, pl.victim("lr", epochs=1), "no_such_maker"),
     UnknownNameError, r"no_such_maker"),
    ("threshold target file missing", lambda t: pl.threshold(DATA, pl.victim("lr", epochs=1), t / "missing.safetensors"),
     (ConfigError, DataError), r"missing\.safetensors"),
    ("threshold wrong module", lambda t: pl.threshold(DATA, pl.victim(lambda: nn.Linear(D, 4), epochs=1), "gradpc"),
     ConfigError, r"expected logits"),
]


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any training starts (the one loop every stage trains through)."""
    import poisonlab.training.victim as victim_module

    def _trained(*args, **kwargs):
        raise AssertionError("training started before the bad input was reported")

    monkeypatch.setattr(victim_module, "train", _trained)


@pytest.mark.parametrize(("call", "error", "pattern"), [pytest.param(c, e, p, id=i) for i, c, e, p in CASES])
def test_bad_input_is_a_clear_error_before_any_training(call, error, pattern, tmp_path, no_training):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert isinstance(info.value, pl.PoisonlabError), f"{type(info.value).__name__} is not a poisonlab error"
    assert re.search(pattern, str(info.value), re.S), f"message does not name the problem: {info.value}"


def test_the_good_call_trains(tmp_path):
    """The control: the same call with nothing wrong runs (and writes ``out``)."""
    r = _run(out=tmp_path / "run")
    assert (tmp_path / "run" / "result.json").is_file() and 0.0 <= r.poisoned_accuracy <= 100.0


def test_model_errors_chain_the_original_exception():
    with pytest.raises(ConfigError) as info:
        _victim_run(lambda: nn.Linear(D + 4, C))()
    assert isinstance(info.value.__cause__, RuntimeError)
