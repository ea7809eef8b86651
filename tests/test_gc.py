"""GradPC and Gradient Canceling: budgets, contracts, determinism, FD checks, objective decrease, CLI."""

import json
import math

import pytest
import torch
from torch import nn

from poisonlab.attacks import ATTACKS, build_attack
from poisonlab.attacks.gc import directional_losses, poison_input_gradient, sum_gradient
from poisonlab.attacks.gradpc import corrupt, project
from poisonlab.autodiff import flatten, named_params
from poisonlab.cli.main import main
from poisonlab.data import poison_count
from poisonlab.errors import ConfigError
from poisonlab.protocol import RunSpec, prepare
from poisonlab.seeding import torch_generator
from poisonlab.theory import min_poison_count
from poisonlab.training import Victim, mean_loss


@pytest.fixture(scope="module")
def digits_victim():
    prep, spec = prepare(RunSpec(dataset="digits", model="lr", epochs=5))
    model = spec.train(prep.train, 0)
    return prep, Victim(spec, 0, {k: v.clone() for k, v in model.state_dict().items()})


# ----------------------------------------------------------------------------- GradPC
@pytest.mark.parametrize("norm,topk", [("l2", None), ("linf", None), ("l2", 50), ("linf", 17)])
def test_gradpc_respects_its_budget_and_raises_the_loss(digits_victim, norm, topk):
    prep, victim = digits_victim
    clean = victim.clean_model()
    before = {k: v.clone() for k, v in clean.state_dict().items()}
    target, info = corrupt(clean, prep.val, eps_w=0.3, norm=norm, topk=topk, steps=8, lr=0.3)
    assert all(torch.equal(before[k], v) for k, v in clean.state_dict().items())  # input untouched
    w0, w1 = flatten(named_params(clean)[1]), flatten(named_params(target)[1])
    d = w1 - w0
    ord_ = math.inf if norm == "linf" else 2
    radius = 0.3 * float(torch.linalg.vector_norm(w0, ord=ord_))
    assert float(torch.linalg.vector_norm(d, ord=ord_)) <= radius * (1 + 1e-6)
    assert info["radius"] == pytest.approx(radius, rel=1e-6)
    if topk is not None:
        assert int((d != 0).sum()) <= topk
    assert mean_loss(target, prep.val) > mean_loss(clean, prep.val) + (0.01 if topk else 0.05)


def test_projection_is_the_nearest_point_and_idempotent():
    g = torch.Generator().manual_seed(0)
    for norm in ("l2", "linf"):
        v = torch.randn(30, generator=g, dtype=torch.float64) * 3
        p = project(v, 1.5, norm)
        assert torch.allclose(project(p, 1.5, norm), p)
        # no random point of the ball is closer to v than p
        for _ in range(200):
            q = torch.randn(30, generator=g, dtype=torch.float64)
            q = project(q * (1.5 * torch.rand(1, generator=g, dtype=torch.float64).item()), 1.5, norm)
            assert (v - p).norm() <= (v - q).norm() + 1e-12


def test_gradpc_bad_options_raise(digits_victim):
    prep, victim = digits_victim
    with pytest.raises(ConfigError):
        corrupt(victim.clean_model(), prep.val, eps_w=-1)
    with pytest.raises(ConfigError):
        corrupt(victim.clean_model(), prep.val, norm="l1")
    with pytest.raises(ConfigError):
        build_attack("gc", {"optimizer": "lbfgs"})
    with pytest.raises(ConfigError):
        build_attack("gc", {"target": "nonsense"})


# ----------------------------------------------------------------------------- GC calculus (float64)
def _tiny():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    names, w = named_params(m)
    xc, yc = torch.rand(25, 1, 2, 3, dtype=torch.float64), torch.randint(0, 3, (25,))
    xp, yp = torch.rand(5, 1, 2, 3, dtype=torch.float64), torch.randint(0, 3, (5,))
    return m, names, w, xc, yc, xp, yp


def test_gc_input_gradient_matches_finite_differences():
    """∂/∂x_j ½‖g(μ) + (1/N)Σ∇ℓ(z_j)‖² (eq. 3.15) against central differences, with chunking."""
    m, names, w, xc, yc, xp, yp = _tiny()
    N = len(xc)
    g_clean = sum_gradient(m, names, w, xc, yc, 1.0 / N, 7)

    def L(x):
        r = g_clean + sum_gradient(m, names, w, x, yp, 1.0 / N, 2)
        return 0.5 * float(r @ r)

    r = g_clean + sum_gradient(m, names, w, xp, yp, 1.0 / N, 3)
    got = poison_input_gradient(m, names, w, xp, yp, r, 1.0 / N, 2)
    h = 1e-6
    fd = torch.zeros_like(xp)
    for idx in range(xp.numel()):
        e = torch.zeros(xp.numel(), dtype=torch.float64)
        e[idx] = h
        e = e.view_as(xp)
        fd.view(-1)[idx] = (L(xp + e) - L(xp - e)) / (2 * h)
    torch.testing.assert_close(got, fd, rtol=1e-6, atol=1e-9)


def test_directional_losses_match_per_point_autograd():
    m, names, w, xc, yc, _, _ = _tiny()
    v = torch.randn(sum(p.numel() for p in w), dtype=torch.float64)
    got = directional_losses(m, names, w, xc, yc, v, 4)
    for i in range(len(xc)):
        gi = sum_gradient(m, names, w, xc[i : i + 1], yc[i : i + 1], 1.0, 1)
        assert got[i].item() == pytest.approx(float(gi @ v), rel=1e-10, abs=1e-12)


# ----------------------------------------------------------------------------- GC attack
GC_FAST = {"target_options": {"eps_w": 0.05, "steps": 1, "lr": 1.0}, "steps": 40, "lr": 0.05}


def test_gc_is_registered_clean_label():
    assert "gc" in ATTACKS and ATTACKS.get("gc").clean_label


def test_gc_contract_determinism_and_objective_decrease(digits_victim):
    prep, victim = digits_victim
    attack = build_attack("gc", GC_FAST)
    fraction = 0.3
    a = attack.poison(prep.attack_data(), victim, fraction, generator=torch_generator(0, "attack"))
    n = poison_count(fraction, len(prep.train))
    assert len(a) == n and a.x.shape[1:] == prep.train.x.shape[1:]
    assert a.x.min() >= 0 and a.x.max() <= 1
    assert torch.equal(a.y, prep.train.y[a.source_index])  # labels unchanged
    assert not torch.equal(a.x, prep.train.x[a.source_index])  # inputs moved
    info = a.info
    assert info["initial_rel_grad_norm"] == pytest.approx(info["grad_norm_trace"][0][1])
    assert info["final_rel_grad_norm"] < 0.3 * info["initial_rel_grad_norm"]  # substantial decrease
    norms = [v for _, v in info["grad_norm_trace"]]
    assert min(norms) == pytest.approx(info["final_rel_grad_norm"])
    assert set(a.states) == {"target"}
    b = attack.poison(prep.attack_data(), victim, fraction, generator=torch_generator(0, "attack"))
    assert torch.equal(a.x, b.x) and torch.equal(a.source_index, b.source_index)
    json.dumps(info)  # serialisable


def test_gc_source_classes_and_aligned_init(digits_victim):
    prep, victim = digits_victim
    out = build_attack("gc", {**GC_FAST, "steps": 3, "source_classes": [3], "init": "aligned"}).poison(
        prep.attack_data(), victim, 0.05, generator=torch_generator(0, "attack"))
    assert (out.y == 3).all()
    mix = build_attack("gc", {**GC_FAST, "steps": 2, "class_proportions": [3, 1] + [0] * 8}).poison(
        prep.attack_data(), victim, 0.1, generator=torch_generator(0, "attack"))
    n = poison_count(0.1, len(prep.train))
    assert int((mix.y == 0).sum()) == round(0.75 * n) and int((mix.y == 1).sum()) == n - round(0.75 * n)
    with pytest.raises(ConfigError):
        build_attack("gc", {"class_proportions": [1, 0], "source_classes": [0]})


def test_gc_target_from_file_and_assess(digits_victim, tmp_path):
    prep, victim = digits_victim
    target, _ = corrupt(victim.clean_model(), prep.val, eps_w=0.05, steps=1, lr=1.0)
    from poisonlab.protocol import save_model

    path = tmp_path / "t.safetensors"
    save_model(path, target)
    attack = build_attack("gc", {"target": str(path), "steps": 5})
    ps = attack.poison(prep.attack_data(), victim, 0.1, generator=torch_generator(0, "attack"))
    w_clean, w_t = flatten(named_params(victim.clean_model())[1]), flatten(named_params(target)[1])
    assert ps.info["clean_to_target_distance"] == pytest.approx(0.05 * float(w_clean.norm() / w_t.norm()), rel=1e-4)
    rep = attack.assess(ps, victim.clean_model(), prep.test)
    assert rep["retrained_to_target_distance"] == pytest.approx(ps.info["clean_to_target_distance"], rel=1e-6)
    assert rep["target_distance_closed"] == pytest.approx(0.0, abs=1e-6)
    same = attack.assess(ps, target, prep.test)
    assert same["retrained_to_target_logit_distance"] == 0.0 and same["retrained_target_agreement"] == 100.0
    bad = tmp_path / "bad.safetensors"
    save_model(bad, nn.Linear(3, 2))
    with pytest.raises(ConfigError):
        build_attack("gc", {"target": str(bad)}).poison(prep.attack_data(), victim, 0.1, generator=torch_generator(0, "a"))


def test_gradpc_targets_go_through_the_given_cache(digits_victim, tmp_path):
    from poisonlab.attacks.targets import make_target
    from poisonlab.cache import ArtifactCache

    prep, victim = digits_victim
    opts = {"eps_w": 0.05, "steps": 3, "lr": 0.5}
    plain, plain_info = make_target("gradpc", victim.clean_model(), prep.val, opts)
    assert plain_info["cache"] is None
    c = ArtifactCache(tmp_path / "c")
    cold, cold_info = make_target("gradpc", victim.clean_model(), prep.val, opts, cache=c)
    warm, warm_info = make_target("gradpc", victim.clean_model(), prep.val, opts, cache=c)
    other, other_info = make_target("gradpc", victim.clean_model(), prep.val, {**opts, "eps_w": 0.1}, cache=c)
    assert (cold_info["cache"], warm_info["cache"], other_info["cache"]) == ("miss", "hit", "miss")
    for a, b in ((plain, cold), (cold, warm)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert {k: v for k, v in warm_info.items() if k != "cache"} == {k: v for k, v in cold_info.items() if k != "cache"}
    assert not torch.equal(other.linear.weight, cold.linear.weight)
    assert len(ArtifactCache(tmp_path / "c").entries("target")) == 2
    # another clean model (here: the target itself) is another key
    _, again = make_target("gradpc", cold, prep.val, opts, cache=c)
    assert again["cache"] == "miss"


# ----------------------------------------------------------------------------- CLI
def test_cli_threshold_target_and_run(tmp_path, capsys):
    t = tmp_path / "t.safetensors"
    assert main(["target", "--dataset", "digits", "--epochs", "3", "--eps-w", "0.5", "--pc-steps", "3",
                 "--out", str(t), "--quiet", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["target_test_accuracy"] < made["clean_test_accuracy"] and t.is_file()
    assert main(["threshold", "--dataset", "digits", "--target", str(t), "--json", "--quiet", "--fraction", "0.5"]) == 0
    th = json.loads(capsys.readouterr().out)
    assert th["target_test_accuracy"] == pytest.approx(made["target_test_accuracy"])
    assert th["fraction_passes"] == (0.5 >= th["tau"])
    assert th["min_poisons"] is None or th["min_poisons"] >= th["tau"] * th["n_clean"] - 1e-9
    assert th["tau_gauge"] >= th["tau_box"] - 1e-9 and th["fraction_passes_gauge"] == (0.5 >= th["tau_gauge"])
    assert th["min_poisons_box"] == min_poison_count(th["tau_gauge"], th["n_clean"]) > 0
    out = tmp_path / "run"
    assert main(["run", "--dataset", "digits", "--attack", "gc", "--target", str(t), "--epochs", "3", "--fraction", "0.05",
                 "-A", "steps=3", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["attack_info"]["target"] == str(t)
    assert "retrained_to_target_distance" in res["attack_info"] and (out / "target.safetensors").is_file()
    assert res["artifacts"]["target_model"] == "target.safetensors"
    assert main(["threshold", "--dataset", "digits", "--target", str(tmp_path / "none.safetensors"), "--quiet"]) == 2


def test_cli_target_and_threshold_reuse_the_cache(tmp_path, capsys, monkeypatch):
    import poisonlab.attacks.gradpc as gradpc_mod
    from poisonlab.cache import ArtifactCache
    from poisonlab.protocol import load_state
    from poisonlab.training import VictimSpec

    made, trained, corrupt_fn, train_fn = [], [], gradpc_mod.corrupt, VictimSpec.train
    monkeypatch.setattr(gradpc_mod, "corrupt", lambda *a, **k: made.append(1) or corrupt_fn(*a, **k))
    monkeypatch.setattr(VictimSpec, "train", lambda self, *a, **k: trained.append(1) or train_fn(self, *a, **k))
    common = ["--dataset", "digits", "--epochs", "3", "--pc-steps", "3", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    hits = []
    for name in ("a", "b"):
        assert main(["target", *common, "--out", str(tmp_path / f"{name}.safetensors"), "--json"]) == 0
        hits.append(json.loads(capsys.readouterr().out)["cache"])
    assert hits == ["miss", "hit"] and (len(made), len(trained)) == (1, 1)
    a, b = load_state(tmp_path / "a.safetensors"), load_state(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    cache = ArtifactCache(tmp_path / "c")
    assert len(cache.entries("victim_clean")) == 1 and len(cache.entries("target")) == 1
    assert main(["threshold", *common, "--target", "gradpc", "--json"]) == 0
    capsys.readouterr()
    assert (len(made), len(trained)) == (1, 1)  # threshold re-used both


def test_gc_reports_the_box_threshold_of_a_linear_target(digits_victim):
    """GC's info carries τ_box (theory/box.py) computed from the clean mean gradient at the target,
    with [weight | bias] laid out as the theory expects; None when the gradient is not the full [W | b]."""
    from poisonlab.theory.box import linear_box_threshold
    from poisonlab.theory.linear import box_threshold

    prep, victim = digits_victim
    target, _ = corrupt(victim.clean_model(), prep.val, eps_w=0.5, steps=5)
    names, w = named_params(target)
    tr = prep.train
    g = sum_gradient(target, names, w, tr.x, tr.y, 1.0 / len(tr), 4096)
    X = torch.cat([tr.x.flatten(1).double(), torch.ones(len(tr), 1, dtype=torch.float64)], 1)
    Wt = torch.cat([target.linear.weight.detach(), target.linear.bias.detach()[:, None]], 1).double()
    P = torch.softmax(X @ Wt.T, 1)
    P[torch.arange(len(tr)), tr.y] -= 1.0
    expected = linear_box_threshold(P.T @ X / len(tr))
    assert math.isclose(box_threshold(target, names, g), expected, rel_tol=1e-4)
    assert box_threshold(target, names[:1], g[: target.linear.weight.numel()]) is None  # not the full gradient
    p = build_attack("gc", {"steps": 2, "target_options.steps": 5}).poison(prep.attack_data(), victim, 0.05,
                                                                           generator=torch_generator(0, "a"))
    assert p.info["tau_box"] is not None and p.info["tau_box"] > 0
    assert p.info["tau_gauge"] >= p.info["tau_box"] - 1e-9 and len(p.info["gauge_label_mix"]) == 10


def test_gc_plan_init_follows_the_gauge_labels_and_cancels_more(digits_victim, tmp_path):
    """init 'plan' draws the label mix of the gauge LP; on a mild target, above τ_gauge, it leaves a
    smaller mixed gradient than random labels after the same steps."""
    from poisonlab.protocol import save_model

    prep, victim = digits_victim
    target, _ = corrupt(victim.clean_model(), prep.val, eps_w=0.05, steps=10)
    path = tmp_path / "t.safetensors"
    save_model(path, target, {})
    res = {}
    for init in ("random", "plan"):
        p = build_attack("gc", {"target": str(path), "steps": 150, "lr": 0.05, "init": init}).poison(
            prep.attack_data(), victim, 0.5, generator=torch_generator(0, "attack"))  # the 5-epoch victim: τ_gauge ≈ 0.33
        res[init] = p
    plan = res["plan"]
    assert plan.info["eps"] > plan.info["tau_gauge"]
    mix = torch.tensor(plan.info["gauge_label_mix"])
    counts = torch.bincount(plan.y, minlength=10).double() / len(plan.y)
    assert torch.allclose(counts, mix.double(), atol=1.0 / len(plan.y) + 1e-9)
    assert plan.info["final_rel_grad_norm"] < 0.7 * res["random"].info["final_rel_grad_norm"], (
        plan.info["final_rel_grad_norm"], res["random"].info["final_rel_grad_norm"])
    with pytest.raises(ConfigError, match="plan"):
        build_attack("gc", {"init": "plan", "source_classes": [1]})
    with pytest.raises(ConfigError, match="radius"):
        build_attack("gc", {"init": "plan", "radius": 0.1})


def test_gc_projection_option_is_what_keeps_pixels_valid(digits_victim):
    """``projection`` is Algorithm 2's line 7: ``"box"`` (the default) keeps the poisons in the data's
    bounds; ``"none"`` takes the published script's unprojected steps, which leave [0, 1], and
    ``poison`` returns them (checked against no box); a radius with ``"none"`` is refused up front."""
    prep, victim = digits_victim
    opts = {**GC_FAST, "lr": 0.5, "steps": 10, "gauge": False}
    free = build_attack("gc", {**opts, "projection": "none"}).poison(prep.attack_data(), victim, 0.3,
                                                                     generator=torch_generator(0, "attack"))
    assert free.x.min() < 0 or free.x.max() > 1
    assert torch.isfinite(free.x).all() and free.info["projection"] == "none"
    assert torch.equal(free.y, prep.train.y[free.source_index])  # still clean-label
    boxed = build_attack("gc", opts).poison(prep.attack_data(), victim, 0.3, generator=torch_generator(0, "attack"))
    assert boxed.x.min() >= 0 and boxed.x.max() <= 1 and boxed.info["projection"] == "box"
    assert build_attack("gc", opts).config.projection == "box"
    assert torch.equal(boxed.source_index, free.source_index)  # same start, only the projection differs
    with pytest.raises(ConfigError, match="projection"):
        build_attack("gc", {"projection": "clip"})
    with pytest.raises(ConfigError, match="radius"):
        build_attack("gc", {"projection": "none", "radius": 0.1})


# ----------------------------------------------------------------------------- GradPC's options as a group
def test_gc_and_feature_targeted_take_gradpcs_options_as_one_group(digits_victim, monkeypatch):
    """``target_options`` is GradPC's own config in gc and in feature_targeted; every GradPC option
    is reachable (also params / batch_size / seed), by a mapping or by dotted keys, and unknown ones
    are rejected; feature_targeted hands its group to its inner gc unchanged."""
    from poisonlab.attacks import gc as gc_mod
    from poisonlab.attacks.gradpc import GradPCConfig

    nested = build_attack("gc", {"target_options": {"eps_w": 0.1, "batch_size": 50, "seed": 3}})
    dotted = build_attack("gc", {"target_options.eps_w": 0.1, "target_options.batch_size": 50, "target_options.seed": 3})
    assert nested.config == dotted.config
    assert nested.config.target_options == GradPCConfig(eps_w=0.1, batch_size=50, seed=3)
    with pytest.raises(ConfigError, match=r"target_options: unknown option\(s\) \['nope'\]"):
        build_attack("gc", {"target_options.nope": 1})
    with pytest.raises(ConfigError, match="eps_w"):
        build_attack("feature_targeted", {"target_options.eps_w": -1})
    seen = []
    make = gc_mod.make_target
    monkeypatch.setattr(gc_mod, "make_target", lambda t, m, v, opts, *a, **k: seen.append(dict(opts)) or make(t, m, v, opts, *a, **k))
    prep, victim = digits_victim
    opts = {"target_options": {"eps_w": 0.05, "steps": 2, "lr": 1.0, "batch_size": 100}}
    build_attack("gc", {**opts, "steps": 2}).poison(prep.attack_data(), victim, 0.03, generator=torch_generator(0, "a"))
    build_attack("feature_targeted", {**opts, "gc_steps": 2, "invert_steps": 2}).poison(
        prep.attack_data(), victim, 0.03, generator=torch_generator(0, "a"))
    assert seen[0] == seen[1] and seen[0]["batch_size"] == 100 and seen[0]["steps"] == 2


def test_gradpc_target_keys_are_canonical(digits_victim, tmp_path):
    """The cache key holds every GradPC option with its default filled in: a partial and a full
    mapping of the same options are one target."""
    from poisonlab.attacks.gradpc import GradPCConfig
    from poisonlab.attacks.targets import make_target
    from poisonlab.cache import ArtifactCache
    from poisonlab.options import config_to_dict

    prep, victim = digits_victim
    c = ArtifactCache(tmp_path / "c")
    _, a = make_target("gradpc", victim.clean_model(), prep.val, {"eps_w": 0.05, "steps": 2}, cache=c)
    full = config_to_dict(GradPCConfig(eps_w=0.05, steps=2))
    _, b = make_target("gradpc", victim.clean_model(), prep.val, full, cache=c)
    assert (a["cache"], b["cache"]) == ("miss", "hit")


def test_run_cli_gradpc_flags_are_shortcuts_for_the_group():
    """``--eps-w`` / ``--pc-steps`` ... are ``-A target_options.<option>``: one mapping
    (cli.target_cmd.GRADPC_FLAGS) for every attack with the group (gc, gradient_matching); an explicit
    -A wins; a flat name for a GradPC option is an unknown option."""
    import argparse

    from poisonlab.attacks.gradpc import GradPCConfig
    from poisonlab.cli import run_cmd

    sub = argparse.ArgumentParser().add_subparsers()
    run_cmd.add_parser(sub)
    parser = sub.choices["run"]

    def opts(*argv):
        return run_cmd.config_from_args(parser.parse_args(list(argv))).attack_options

    assert opts("--attack", "gc", "--eps-w", "0.3", "--pc-steps", "3", "--pc-lr", "0.5") == {
        "target_options.eps_w": 0.3, "target_options.steps": 3, "target_options.lr": 0.5}
    assert opts("--attack", "gc", "--eps-w", "0.3", "-A", "target_options.eps_w=0.2") == {"target_options.eps_w": 0.2}
    assert opts("--attack", "gc", "--target", "t.safetensors") == {"target": "t.safetensors"}
    cfg = build_attack("gc", opts("--attack", "gc", "--eps-w", "0.3", "--pc-norm", "linf")).config.target_options
    assert (cfg.eps_w, cfg.norm) == (0.3, "linf")
    gm = opts("--attack", "gradient_matching", "--eps-w", "0.3", "--pc-steps", "3")
    assert gm == {"target_options.eps_w": 0.3, "target_options.steps": 3}
    assert build_attack("gradient_matching", gm).config.target_options == GradPCConfig(eps_w=0.3, steps=3)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['eps_w'\].*'target_options'"):
        build_attack("gradient_matching", {"eps_w": 0.3})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['target_options'\]"):  # no GradPC group
        build_attack("label_flip", opts("--attack", "label_flip", "--eps-w", "0.3"))


def test_gc_divergence_is_a_divergence_error_naming_lr(digits_victim, monkeypatch):
    """A non-finite GC objective raises DivergenceError (a RuntimeError) whose message names ``lr``."""
    import poisonlab.attacks.gc as gc_module
    from poisonlab.errors import DivergenceError

    prep, victim = digits_victim
    original = gc_module.poison_input_gradient
    monkeypatch.setattr(gc_module, "poison_input_gradient", lambda *a, **k: original(*a, **k) * float("nan"))
    with pytest.raises(DivergenceError, match="lower lr"):
        build_attack("gc", {**GC_FAST, "steps": 2}).poison(prep.attack_data(), victim, 0.05, generator=torch_generator(0, "attack"))


def test_gauge_direction_lands_on_the_parameters_device_and_dtype():
    """The LP's CPU float64 direction is moved to the parameters' device (here 'meta', a stand-in for CUDA)."""
    import numpy as np

    from poisonlab.attacks.reachable_target import _gauge_direction

    w = [torch.empty(3, 4, device="meta", dtype=torch.float32), torch.empty(3, device="meta", dtype=torch.float32)]
    v = _gauge_direction(torch.from_numpy(np.arange(15.0).reshape(3, 5)), ["W", "b"], ("W", "b"), w)
    assert v.device.type == "meta" and v.dtype == torch.float32 and v.shape == (15,)
