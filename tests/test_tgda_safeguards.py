"""TGDA's safeguards (trust region, CG fallback, rollback of non-finite rounds, DivergenceError with the
checkpoints kept) and the follower that takes the victim recipe's optimiser (checked against torch.optim)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab.attacks import bilevel as B
from poisonlab.attacks import build_attack
from poisonlab.attacks.bilevel import FollowerOptimizer
from poisonlab.data import AttackData, load_dataset
from poisonlab.errors import DivergenceError
from poisonlab.seeding import torch_generator
from poisonlab.training import TrainConfig, Victim, VictimSpec

TINY = {"epochs": 2, "n": 2, "pretrain.epochs": 1, "solver.iters": 5, "generator_options": {"hidden": [32, 16]}}


def _tiny(model: str = "lr", recipe: TrainConfig | None = None, n_train: int = 120, n_val: int = 60) -> tuple[AttackData, Victim]:
    b = load_dataset("digits")
    train = b.train.subset(torch.arange(n_train))
    val = b.train.subset(torch.arange(n_train, n_train + n_val))
    spec = VictimSpec(model, (1, 8, 8), 10, recipe or TrainConfig(epochs=5, batch_size=40, device="cpu"))
    clean = spec.train(train, 0)
    return AttackData(train, val), Victim(spec, 0, {k: v.clone() for k, v in clean.state_dict().items()})


# ---------------------------------------------------------------------------- the follower's optimiser
@pytest.mark.parametrize("recipe", [
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9),
    TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.05),
    TrainConfig(optimizer="adam", lr=0.01),
    TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.01),
    TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1),
], ids=lambda r: r.describe().split(", 100")[0])
def test_follower_optimizer_takes_the_steps_of_torch_optim(recipe):
    """Five functional steps (two calls, the state carried between them) equal torch.optim's, float64,
    with two parameter groups at different rates (a fine-tuned encoder's lr scale)."""
    from poisonlab.training.loop import make_optimizer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    net.optimizer_groups = lambda lr: [{"params": list(net[0].parameters()), "lr": lr * 0.5},
                                       {"params": list(net[2].parameters()), "lr": lr}]
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 2, (16,))
    fol, w = B.Follower.from_model(net, torch.float64)
    fopt = FollowerOptimizer.for_recipe(recipe, fol.step_sizes(recipe.lr))
    assert not fopt.plain
    w = B.follower_steps(fopt, lambda ws: fol.loss(ws, x, y), w, 2)
    w = B.follower_steps(fopt, lambda ws: fol.loss(ws, x, y), w, 3)
    opt, _ = make_optimizer(net, recipe)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for a, (_, p) in zip(w, net.named_parameters()):
        torch.testing.assert_close(a, p.detach(), rtol=1e-12, atol=1e-14)


def test_plain_sgd_recipe_takes_exactly_sgd_steps():
    torch.manual_seed(1)
    net = nn.Linear(5, 3).double()
    fol, w = B.Follower.from_model(net, torch.float64)
    x, y = torch.randn(10, 5, dtype=torch.float64), torch.randint(0, 3, (10,))
    fopt = FollowerOptimizer.for_recipe(TrainConfig(lr=0.3), fol.step_sizes(0.3))
    assert fopt.plain
    a = B.follower_steps(fopt, lambda ws: fol.loss(ws, x, y), w, 4)
    b = B.sgd_steps(lambda ws: fol.loss(ws, x, y), w, 0.3, 4)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    c = fopt.steps(lambda ws: fol.loss(ws, x, y), w, 4)  # its own plain path is the same update
    assert all(torch.equal(p, q) for p, q in zip(a, c))


def test_tgda_follows_an_adam_recipe_and_resumes_byte_identically(tmp_path, recwarn):
    """An Adam victim: the follower takes Adam's steps (no 'approximated' warning), its moments go
    into the checkpoint, and a resumed run equals an uninterrupted one."""
    data, victim = _tiny(recipe=TrainConfig(optimizer="adam", lr=0.01, epochs=5, batch_size=40, device="cpu"))
    opts = dict(TINY, epochs=3)
    full = build_attack("tgda", opts).poison(data, victim, 0.05, generator=torch_generator(2, "a"))
    assert full.info["follower"].startswith("adam lr 0.01") and "approximated" not in full.info["follower"]
    assert not any("approximated" in str(w.message) for w in recwarn.list)
    ck = str(tmp_path / "ck")
    build_attack("tgda", dict(opts, epochs=1, **{"checkpoint.dir": ck})).poison(data, victim, 0.05, generator=torch_generator(2, "a"))
    resumed = build_attack("tgda", dict(opts, **{"checkpoint.dir": ck})).poison(data, victim, 0.05, generator=torch_generator(2, "a"))
    assert torch.equal(full.x, resumed.x)
    sgd = _tiny()[1]  # the same data, a plain-SGD victim: another follower, other poisons
    other = build_attack("tgda", opts).poison(data, sgd, 0.05, generator=torch_generator(2, "a"))
    assert not torch.equal(full.x, other.x)


def test_a_schedule_is_still_said_to_be_approximated():
    rec = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01, schedule="cosine")
    text, approximated = B.follower_description(rec, 1e-3, modelled=True)
    assert approximated and "schedule approximated" in text and text.startswith("adamw lr 0.001")
    assert B.follower_description(TrainConfig(optimizer="adam", lr=1e-3), 1e-3, modelled=True)[1] is False


# ---------------------------------------------------------------------------- safeguards
def test_trust_region_keeps_a_huge_leader_step_finite_and_counts_it():
    data, victim = _tiny()
    p = build_attack("tgda", dict(TINY, leader_lr=1e30)).poison(data, victim, 0.05, generator=torch_generator(0, "a"))
    sg = p.info["safeguards"]
    assert torch.isfinite(p.x).all() and sg["steps_shrunk"] > 0
    assert max(p.info["max_relative_step"]) > 1e20  # what the optimiser asked for, before the trust region


def test_default_steps_on_lr_stay_inside_the_trust_region():
    """The default path on a convex victim: no safeguard fires (the poisons are the unguarded ones)."""
    data, victim = _tiny()
    a = build_attack("tgda", TINY).poison(data, victim, 0.05, generator=torch_generator(0, "a"))
    off = build_attack("tgda", dict(TINY, **{"safeguard.trust_region": None, "safeguard.cg_fallback": False})).poison(
        data, victim, 0.05, generator=torch_generator(0, "a"))
    sg = a.info["safeguards"]
    assert (sg["steps_shrunk"], sg["steps_rejected"], sg["backtracks"], sg["cg_fallbacks"]) == (0, 0, 0, {})
    assert torch.equal(a.x, off.x)


def test_nn_victim_meets_negative_curvature_and_falls_back_by_itself():
    data, victim = _tiny("nn")
    p = build_attack("tgda", TINY).poison(data, victim, 0.05, generator=torch_generator(0, "a"))
    sg = p.info["safeguards"]
    assert sg["cg_fallbacks"].get("normal_equations", 0) >= 1 and sg["solver"]["normal_equations"] is True
    assert torch.isfinite(p.x).all()


def test_a_non_finite_round_is_rolled_back_and_redone_with_a_halved_step(monkeypatch):
    import poisonlab.attacks.tgda as T

    data, victim = _tiny()
    follow, calls = T.TGDA._follow, []

    def poisoned_once(self, *a, **k):  # the third follower call returns NaN weights
        w = follow(self, *a, **k)
        calls.append(1)
        return tuple(torch.full_like(p, float("nan")) for p in w) if len(calls) == 3 else w

    monkeypatch.setattr(T.TGDA, "_follow", poisoned_once)
    p = build_attack("tgda", TINY).poison(data, victim, 0.05, generator=torch_generator(0, "a"))
    sg = p.info["safeguards"]
    assert sg["backtracks"] == 1 and sg["leader_lr_scale"] == 0.5
    assert torch.isfinite(p.x).all()


def test_divergence_after_the_backtracks_raises_and_keeps_the_checkpoint(monkeypatch, tmp_path):
    import poisonlab.attacks.tgda as T

    data, victim = _tiny()
    ck = tmp_path / "ck"
    opts = dict(TINY, **{"checkpoint.dir": str(ck), "safeguard.backtracks": 2})
    build_attack("tgda", dict(opts, epochs=1)).poison(
        data, victim, 0.05, generator=torch_generator(0, "a"))
    saved = (ck / B.Checkpoint.FILE).read_bytes()
    follow = T.TGDA._follow
    monkeypatch.setattr(T.TGDA, "_follow", lambda self, *a, **k: tuple(torch.full_like(p, float("inf")) for p in follow(self, *a, **k)))
    with pytest.raises(DivergenceError, match=r"epoch 2, round 1, after 2 halvings.*leader_lr \(now 0.1\).*solver.damping"):
        build_attack("tgda", opts).poison(
            data, victim, 0.05, generator=torch_generator(0, "a"))
    assert (ck / B.Checkpoint.FILE).read_bytes() == saved  # the epoch-1 checkpoint survives


# ---------------------------------------------------------------------------- the same follower in the other bilevel attacks
@pytest.mark.parametrize("attack, options", [
    ("back_gradient", {"epochs": 2, "k": 2}),
    ("min_max", {"epochs": 2}),
    ("metapoison", {"outer_steps": 2, "ensemble": 2, "stagger_epochs": 1}),
    ("i_min_max", {"follower_steps": 2}),
])
def test_the_other_bilevel_attacks_follow_an_adamw_recipe(attack, options, recwarn):
    """back-gradient, min-max, i-Min-max and MetaPoison take the recipe's optimiser too (no 'not modelled'
    warning), which changes their poisons against the same data with a plain-SGD victim."""
    recipe = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.01, epochs=5, batch_size=40, device="cpu")
    data, victim = _tiny(recipe=recipe)
    adamw = build_attack(attack, options).poison(data, victim, 0.05, generator=torch_generator(3, "a"))
    assert adamw.info["follower"].startswith("adamw lr 0.01") and "approximated" not in adamw.info["follower"]
    assert not any("not modelled" in str(w.message) for w in recwarn.list)
    assert torch.isfinite(adamw.x).all()
    sgd = _tiny()[1]  # a plain-SGD victim trained on the same data
    plain = build_attack(attack, options).poison(data, sgd, 0.05, generator=torch_generator(3, "a"))
    assert not torch.equal(adamw.x, plain.x)


def test_back_gradient_checkpoints_the_followers_adam_moments(tmp_path):
    """A run resumed from its epoch-1 checkpoint equals an uninterrupted one: the follower's Adam
    moments went into the checkpoint with its weights."""
    data, victim = _tiny(recipe=TrainConfig(optimizer="adam", lr=0.01, epochs=5, batch_size=40, device="cpu"))
    opts = {"epochs": 3, "k": 2, "n": 2}
    full = build_attack("back_gradient", opts).poison(data, victim, 0.05, generator=torch_generator(4, "a"))
    ck = str(tmp_path / "ck")
    build_attack("back_gradient", dict(opts, epochs=1, **{"checkpoint.dir": ck})).poison(
        data, victim, 0.05, generator=torch_generator(4, "a"))
    resumed = build_attack("back_gradient", dict(opts, **{"checkpoint.dir": ck})).poison(
        data, victim, 0.05, generator=torch_generator(4, "a"))
    assert torch.equal(full.x, resumed.x)
