"""The training recipe: optimisers (SGD / Nesterov / Adam / AdamW), lr schedules, validation."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.data.types import Dataset
from poisonlab.errors import ConfigError
from poisonlab.training import TrainConfig, accuracy, train
from poisonlab.training.loop import lr_at, make_optimizer


def separable(n=200, d=6, seed=0) -> Dataset:
    """Two linearly separable classes in [0, 1]^d (label = side of a random hyperplane, with margin)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g)
    x = torch.rand(4 * n, d, generator=g)
    s = (x - 0.5) @ w
    keep = s.abs() > 0.1 * w.norm()
    x, s = x[keep][:n], s[keep][:n]
    return Dataset(x, (s > 0).long(), 2)


def logreg(d=6, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(d, 2)


def fit(cfg: TrainConfig, data: Dataset, seed=0, gen_seed=1) -> nn.Module:
    return train(logreg(data.x.shape[1], seed), data, cfg, torch.Generator().manual_seed(gen_seed))


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def hand_sgd(data: Dataset, epochs, bs, lr_of_epoch, gen: torch.Generator, **sgd) -> nn.Module:
    """Plain mini-batch SGD written out: a generator-driven permutation per epoch, lr set by hand."""
    model = logreg(data.x.shape[1])
    opt = torch.optim.SGD(model.parameters(), lr=lr_of_epoch(0), **sgd)
    for e in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr_of_epoch(e)
        perm = torch.randperm(len(data), generator=gen)
        for start in range(0, len(data), bs):
            idx = perm[start : start + bs]
            loss = F.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model


@pytest.mark.parametrize("sgd", [{}, {"momentum": 0.9, "weight_decay": 1e-3}])
def test_default_recipe_is_bit_identical_to_plain_sgd(sgd):
    data = separable()
    cfg = TrainConfig(epochs=4, batch_size=32, device="cpu", **sgd)
    g_lib, g_ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    got = train(logreg(), data, cfg, g_lib)
    ref = hand_sgd(data, 4, 32, lambda e: 0.1, g_ref, **sgd)
    assert torch.equal(flat(got), flat(ref))
    # same draws from the generator: the batch order of whatever runs next is unchanged too
    assert torch.equal(torch.randperm(100, generator=g_lib), torch.randperm(100, generator=g_ref))


def test_defaults_unchanged():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.momentum, cfg.weight_decay) == (0.1, 100, None, 0.0, 0.0)
    assert (cfg.optimizer, cfg.nesterov, cfg.schedule, cfg.step_size, cfg.gamma) == ("sgd", False, None, None, 0.1)
    opt, sched = make_optimizer(logreg(), cfg)
    assert type(opt) is torch.optim.SGD and sched is None
    assert opt.param_groups[0]["momentum"] == 0 and not opt.param_groups[0]["nesterov"]


RECIPES = [
    TrainConfig(optimizer="sgd", lr=0.5, epochs=30, batch_size=20, device="cpu"),
    TrainConfig(optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, epochs=30, batch_size=20, device="cpu"),
    TrainConfig(optimizer="adam", lr=0.05, epochs=30, batch_size=20, device="cpu"),
    TrainConfig(optimizer="adamw", lr=0.05, weight_decay=1e-2, epochs=30, batch_size=20, device="cpu"),
    TrainConfig(optimizer="sgd", lr=0.5, momentum=0.5, epochs=30, batch_size=20, schedule="cosine", device="cpu"),
    TrainConfig(optimizer="adam", lr=0.05, epochs=30, batch_size=20, schedule="step", step_size=10, gamma=0.5, device="cpu"),
]


@pytest.mark.parametrize("cfg", RECIPES, ids=lambda c: c.describe())
def test_each_recipe_learns_separable_data_and_is_reproducible(cfg):
    data = separable()
    untrained = logreg()
    assert accuracy(untrained, data) < 90.0  # otherwise the check below proves nothing
    model = fit(cfg, data)
    assert accuracy(model, data) >= 97.0
    # same seed => same weights; another batch order => other weights
    assert torch.equal(flat(model), flat(fit(cfg, data)))
    assert not torch.equal(flat(model), flat(fit(cfg, data, gen_seed=2)))


def test_optimizers_really_differ():
    data = separable()
    base = {"lr": 0.05, "epochs": 3, "batch_size": 20, "device": "cpu"}
    ws = [flat(fit(TrainConfig(**base), data)),
          flat(fit(TrainConfig(momentum=0.9, **base), data)),
          flat(fit(TrainConfig(momentum=0.9, nesterov=True, **base), data)),
          flat(fit(TrainConfig(optimizer="adam", **base), data)),
          flat(fit(TrainConfig(optimizer="adamw", weight_decay=0.5, **base), data))]
    for i in range(len(ws)):
        for j in range(i):
            assert not torch.allclose(ws[i], ws[j]), (i, j)
    opt, _ = make_optimizer(logreg(), TrainConfig(optimizer="adamw", weight_decay=0.5))
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["weight_decay"] == 0.5
    opt, _ = make_optimizer(logreg(), TrainConfig(optimizer="adam"))
    assert type(opt) is torch.optim.Adam


def test_cosine_schedule_anneals_to_zero():
    cfg = TrainConfig(lr=0.4, epochs=10, schedule="cosine")
    lrs = [lr_at(cfg, e) for e in range(11)]
    assert lrs[0] == pytest.approx(0.4)
    for e, lr in enumerate(lrs):
        assert lr == pytest.approx(0.4 * (1 + math.cos(math.pi * e / 10)) / 2, abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and lrs[-2] > 0


def test_train_follows_the_cosine_schedule():
    """train() with a cosine schedule == SGD written out with the closed-form lr of each epoch."""
    data = separable()
    cfg = TrainConfig(lr=0.3, epochs=5, batch_size=25, schedule="cosine", device="cpu")
    got = train(logreg(), data, cfg, torch.Generator().manual_seed(3))
    ref = hand_sgd(data, 5, 25, lambda e: 0.3 * (1 + math.cos(math.pi * e / 5)) / 2, torch.Generator().manual_seed(3))
    assert torch.allclose(flat(got), flat(ref), rtol=0, atol=1e-6)
    const = train(logreg(), data, TrainConfig(lr=0.3, epochs=5, batch_size=25, device="cpu"), torch.Generator().manual_seed(3))
    assert not torch.allclose(flat(got), flat(const), atol=1e-4)


def test_step_schedule_multiplies_by_gamma_at_the_right_epochs():
    cfg = TrainConfig(lr=1.0, epochs=9, schedule="step", step_size=4, gamma=0.5)
    assert [lr_at(cfg, e) for e in range(10)] == pytest.approx([1, 1, 1, 1, .5, .5, .5, .5, .25, .25])
    # default step size: epochs // 3, at least 1
    d = TrainConfig(lr=1.0, epochs=9, schedule="step")
    assert d.resolved_step_size == 3
    assert [lr_at(d, e) for e in range(10)] == pytest.approx([1, 1, 1, .1, .1, .1, .01, .01, .01, .001])
    assert TrainConfig(epochs=2, schedule="step").resolved_step_size == 1
    assert TrainConfig(epochs=0, schedule="step").resolved_step_size == 1


def test_train_follows_the_step_schedule():
    data = separable()
    cfg = TrainConfig(lr=0.4, epochs=5, batch_size=25, schedule="step", step_size=2, gamma=0.25, device="cpu")
    got = train(logreg(), data, cfg, torch.Generator().manual_seed(4))
    ref = hand_sgd(data, 5, 25, lambda e: 0.4 * 0.25 ** (e // 2), torch.Generator().manual_seed(4))
    assert torch.allclose(flat(got), flat(ref), rtol=0, atol=1e-6)


def test_constant_lr_and_lr_at_bounds():
    cfg = TrainConfig(lr=0.3, epochs=4)
    assert [lr_at(cfg, e) for e in range(5)] == [0.3] * 5
    with pytest.raises(ValueError, match="epoch"):
        lr_at(cfg, 5)


class TwoGroups(nn.Module):
    """A model with an encoder that steps at a quarter of the head's learning rate."""

    def __init__(self):
        super().__init__()
        self.encoder, self.head = nn.Linear(6, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.encoder(x)))

    def optimizer_groups(self, lr):
        return [{"params": list(self.encoder.parameters()), "lr": 0.25 * lr}, {"params": list(self.head.parameters()), "lr": lr}]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("schedule", [None, "cosine", "step"])
def test_param_groups_keep_their_ratio_under_a_schedule(optimizer, schedule):
    cfg = TrainConfig(lr=0.2, epochs=6, optimizer=optimizer, schedule=schedule)
    opt, sched = make_optimizer(TwoGroups(), cfg)
    assert len(opt.param_groups) == 2
    for e in range(cfg.epochs):
        enc, head = (g["lr"] for g in opt.param_groups)
        assert head == pytest.approx(lr_at(cfg, e))
        assert enc == pytest.approx(0.25 * head)
        opt.step()
        if sched is not None:
            sched.step()
    if schedule is not None:
        assert opt.param_groups[1]["lr"] < 0.2
    # and train() runs with the groups
    data = separable()
    train(TwoGroups(), data, TrainConfig(lr=0.1, epochs=2, batch_size=50, optimizer=optimizer, schedule=schedule, device="cpu"),
          torch.Generator().manual_seed(0))


def test_nesterov_needs_momentum_and_sgd():
    with pytest.raises(ConfigError, match=r"nesterov.*momentum 0\.0"):
        TrainConfig(nesterov=True)
    with pytest.raises(ConfigError, match="nesterov applies to optimizer 'sgd' only"):
        TrainConfig(nesterov=True, momentum=0.9, optimizer="adam")
    assert make_optimizer(logreg(), TrainConfig(nesterov=True, momentum=0.9))[0].param_groups[0]["nesterov"]


def test_unknown_optimizer_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"optimizer must be one of 'sgd', 'adam', 'adamw', got 'rmsprop'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match=r"schedule must be None \(constant lr\) or one of 'cosine', 'step', got 'linear'"):
        TrainConfig(schedule="linear")


@pytest.mark.parametrize("bad, field", [
    ({"optimizer": "SGD"}, "optimizer"),
    ({"optimizer": "adam", "momentum": 0.9}, "momentum"),
    ({"nesterov": "yes"}, "nesterov"),
    ({"schedule": "step", "step_size": 0}, "step_size"),
    ({"schedule": "step", "step_size": 2.5}, "step_size"),
    ({"schedule": "step", "gamma": 0.0}, "gamma"),
    ({"schedule": "step", "gamma": 2.0}, "gamma"),
    ({"step_size": 3}, "step_size"),
    ({"schedule": "cosine", "gamma": 0.5}, "gamma"),
    ({"lr": float("nan")}, "lr"),
    ({"epochs": True}, "epochs"),
    ({"momentum": "0.9"}, "momentum"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_fields_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig.from_dict(bad)


def test_from_dict_round_trip_and_unknown_keys():
    d = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine", "epochs": 7}
    cfg = TrainConfig.from_dict(d)
    assert (cfg.optimizer, cfg.schedule, cfg.epochs) == ("adamw", "cosine", 7)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['scheduler'\]"):
        TrainConfig.from_dict({"scheduler": "cosine"})


def test_describe():
    assert TrainConfig().describe() == "sgd lr 0.1, 100 epochs, dataset's default batch, constant lr"
    assert (TrainConfig(momentum=0.9, nesterov=True, batch_size=1000, schedule="cosine").describe()
            == "sgd lr 0.1, momentum 0.9 (nesterov), 100 epochs, batch 1000, cosine schedule")
    assert (TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01, epochs=1, batch_size=64, schedule="step").describe()
            == "adamw lr 0.001, decoupled weight decay 0.01, 1 epoch, batch 64, step schedule (x0.1 every 1 epoch)")
