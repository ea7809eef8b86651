"""Attacks on fixed feature extractors: unlearnable examples (error-minimising noise) and the
feature-targeted attack, plus the protocol / CLI end to end with linear_probe and fine_tune."""

import json

import pytest
import torch

from poisonlab.attacks import ATTACKS, build_attack
from poisonlab.cli.main import main
from poisonlab.data import load_dataset, poison_count, split_train_val
from poisonlab.errors import ConfigError
from poisonlab.pretrain import PretrainConfig, get_extractor
from poisonlab.training import TrainConfig, Victim, VictimSpec, mean_loss
from poisonlab.data.types import Dataset, PoisonedDataset

needs_gc = pytest.mark.skipif("gc" not in ATTACKS, reason="the gc attack (GradPC + Gradient Canceling) is not merged")


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    out = tmp_path_factory.mktemp("ext") / "digits_tiny.safetensors"
    cfg = PretrainConfig(dataset="digits", n_images=512, epochs=3, batch_size=64, encoder_options={"channels": [4, 8]})
    path, _ = get_extractor(cfg, out=out)
    return path


@pytest.fixture(scope="module")
def digits():
    b = load_dataset("digits")
    return split_train_val(b.train, torch.Generator().manual_seed(0))


def _victim(name, data, epochs=3):
    spec = VictimSpec(name, data.train.input_shape, 10, TrainConfig(epochs=epochs, batch_size=64, device="cpu"))
    model = spec.train(data.train, seed=0)
    return Victim(spec, 0, {k: v.clone() for k, v in model.state_dict().items()})


def test_unlearnable_noise_minimises_error_within_radius(digits):
    victim = _victim("lr", digits)
    r = 8 / 255
    out = build_attack("unlearnable", {"radius": r, "rounds": 3, "pgd_steps": 10}).poison(
        digits, victim, 0.1, generator=torch.Generator().manual_seed(0))
    src = digits.train.x[out.source_index]
    assert (out.x - src).abs().max() <= r + 1e-6 and (out.x - src).abs().max() > r / 2
    assert out.info["surrogate_loss_poisons"] < out.info["surrogate_loss_clean_sources"]


def test_unconstrained_unlearnable_is_learned_more_easily_than_its_sources(digits):
    victim = _victim("lr", digits)
    out = build_attack("unlearnable", {"radius": None, "rounds": 3, "pgd_steps": 10}).poison(
        digits, victim, 0.1, generator=torch.Generator().manual_seed(0))
    src = Dataset(digits.train.x[out.source_index], out.y, 10)
    assert (out.x - src.x).abs().max() > 0.2  # free to leave the 8/255 ball
    retrained = victim.retrain(PoisonedDataset.combine(digits.train, out).dataset)  # an independent victim
    assert mean_loss(retrained, Dataset(out.x, out.y, 10)) < mean_loss(retrained, src)


def test_unlearnable_on_a_frozen_extractor(digits, extractor):
    victim = _victim(f"linear_probe:{extractor}", digits, epochs=2)
    out = build_attack("unlearnable", {"rounds": 2, "pgd_steps": 5, "radius": 0.1}).poison(
        digits, victim, 0.05, generator=torch.Generator().manual_seed(0))
    assert len(out) == poison_count(0.05, len(digits.train))
    assert (out.x - digits.train.x[out.source_index]).abs().max() <= 0.1 + 1e-6
    with pytest.raises(ConfigError, match="radius"):
        build_attack("unlearnable", {"radius": 0.0})


@needs_gc
@pytest.mark.parametrize("radius", [None, 0.1])
def test_feature_targeted_on_linear_probe(digits, extractor, radius):
    victim = _victim(f"linear_probe:{extractor}", digits, epochs=2)
    opts = {"target_options.steps": 5, "gc_steps": 30, "invert_steps": 60, "radius": radius}
    out = build_attack("feature_targeted", opts).poison(digits, victim, 0.05, generator=torch.Generator().manual_seed(0))
    src = digits.train.x[out.source_index]
    assert torch.equal(out.y, digits.train.y[out.source_index])
    if radius is not None:
        assert (out.x - src).abs().max() <= radius + 1e-6
    info = out.info
    # the inversion moves the features towards the crafted ones
    assert info["feature_rel_error_mean"] < info["feature_rel_error_initial_mean"]
    assert info["gc_feature_info"]["final_rel_grad_norm"] < info["gc_feature_info"]["initial_rel_grad_norm"]


@needs_gc
def test_feature_targeted_on_logistic_regression_inverts_exactly(digits):
    """φ = pixels for LR: the inversion is the identity's preimage and is reached (up to the box)."""
    victim = _victim("lr", digits)
    out = build_attack("feature_targeted", {"target_options.steps": 5, "gc_steps": 30, "invert_steps": 300, "invert_lr": 0.05}).poison(
        digits, victim, 0.05, generator=torch.Generator().manual_seed(0))
    assert out.info["feature_rel_error_mean"] < 1e-2


def test_cli_pretrain_then_run_linear_probe_and_fine_tune(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path / "cache"))
    args = ["pretrain", "--dataset", "digits", "--n-images", "256", "--epochs", "1", "--batch-size", "64",
            "-E", "channels=[4,8]", "--json"]
    assert main(args) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["cached"] is False and meta["path"].endswith(f"{meta['key']}.safetensors")
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["cached"] is True
    probe_out = tmp_path / "probe"
    run = ["run", "--dataset", "digits", "--attack", "unlearnable", "-A", "rounds=1", "-A", "pgd_steps=2",
           "--epochs", "2", "--json"]
    assert main([*run, "--model", f"linear_probe:{meta['key']}", "--out", str(probe_out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == f"linear_probe:{meta['key']}" and (probe_out / "result.json").is_file()
    assert main([*run, "--model", f"fine_tune:{meta['key']}", "--poisons", str(probe_out), "--out", str(tmp_path / "ft")]) == 0
    res_ft = json.loads(capsys.readouterr().out)
    assert res_ft["n_poison"] == res["n_poison"]
    # fine-tuning trained the encoder (its step is small, so compare weights rather than accuracies)
    from safetensors.torch import load_file
    w_probe, w_ft = (load_file(str(d / "victim_clean.safetensors")) for d in (probe_out, tmp_path / "ft"))
    enc = [k for k in w_probe if k.startswith("encoder.") and k.endswith("weight")]
    assert enc and not any(torch.equal(w_probe[k], w_ft[k]) for k in enc)
    assert main([*run, "--model", "linear_probe:no_such_key", "--out", str(tmp_path / "x")]) == 2
    assert "poisonlab pretrain" in capsys.readouterr().err


# the chapter-4 attacks, with small options (the ones not merged yet are simply absent)
RADIUS_OPTIONS = {
    "tgda": {"epochs": 1, "n": 2, "pretrain.epochs": 1, "solver.iters": 3, "generator_options": {"hidden": [32, 16]}},
    "gc": {"target_options.eps_w": 0.05, "target_options.steps": 1, "steps": 10},
    "unlearnable": {"rounds": 1, "pgd_steps": 3},
    "feature_targeted": {"target_options.steps": 2, "gc_steps": 10, "invert_steps": 10},
    "gradient_matching": {"steps": 5, "restarts": 2},
}


@pytest.mark.parametrize("name", [n for n in RADIUS_OPTIONS if n in ATTACKS])
def test_every_attack_with_a_radius_respects_it(digits, name):
    victim = _victim("lr", digits)
    r = 0.05
    out = build_attack(name, {**RADIUS_OPTIONS[name], "radius": r}).poison(
        digits, victim, 0.03, generator=torch.Generator().manual_seed(0))
    has_src = out.source_index >= 0
    assert has_src.all()
    assert (out.x - digits.train.x[out.source_index]).abs().max() <= r + 1e-6


def test_feature_space_head_is_exactly_the_clean_head():
    """Stage (b) works on [0, 1]-scaled features with a rescaled head: its logits equal the victim's."""
    from poisonlab.attacks.feature_targeted import feature_space
    from poisonlab.data.types import AttackData
    from poisonlab.models import build_victim, split_head

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_victim("cnn", (1, 8, 8), 3, channels=(2, 4)).double().eval()
    x = torch.rand(30, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    data = AttackData(Dataset(x[:20], y[:20], 3), Dataset(x[20:], y[20:], 3))
    feats, head = split_head(model)
    fs = feature_space(feats, head, data, torch.device("cpu"))
    lr = build_victim("lr", (fs.lo.numel(), 1, 1), 3).double()
    lr.load_state_dict(fs.head_state)
    assert fs.data.train.x.min() >= 0 and fs.data.train.x.max() <= 1
    assert torch.allclose(lr(fs.data.train.x), model(x[:20]), atol=1e-10, rtol=0)
    assert torch.allclose(fs.unscale(fs.data.val.x), feats(x[20:]), atol=1e-12)


BILEVEL_FAST = {
    "tgda": {"epochs": 1, "n": 1, "pretrain.epochs": 1, "solver.iters": 3, "generator_options": {"hidden": [32, 16]}},
    "back_gradient": {"epochs": 1, "k": 2},
    "min_max": {"epochs": 1},
    "metapoison": {"outer_steps": 2, "ensemble": 2, "stagger_epochs": 1, "radius": 0.1},
}


@pytest.mark.parametrize("attack", sorted(BILEVEL_FAST))
def test_bilevel_attacks_step_a_fine_tuned_encoder_like_the_training_loop(attack, digits, extractor, monkeypatch):
    """Every follower step of the four bilevel attacks uses the recipe's per-group rates: the head at
    lr, the fine-tuned encoder at lr·encoder_lr_scale (not one lr for all, which collapses it)."""
    from poisonlab.attacks.bilevel import follower as B  # the module whose follower_steps call sgd_steps

    spec = VictimSpec(f"fine_tune:{extractor}", digits.train.input_shape, 10,
                      TrainConfig(epochs=1, batch_size=64, device="cpu"), {"encoder_lr_scale": 0.25})
    model = spec.train(digits.train, seed=0)
    victim = Victim(spec, 0, {k: v.clone() for k, v in model.state_dict().items()})
    calls, step = [], B.sgd_steps

    def recording(loss_fn, w, lr, steps, **kw):
        calls.append(lr)
        return step(loss_fn, w, lr, steps, **kw)

    monkeypatch.setattr(B, "sgd_steps", recording)
    build_attack(attack, BILEVEL_FAST[attack]).poison(digits, victim, 0.05, generator=torch.Generator().manual_seed(0))
    lr = spec.recipe.lr
    assert calls
    for rates in calls:
        assert not isinstance(rates, (int, float))
        assert sorted(set(rates)) == pytest.approx([lr * 0.25, lr])
