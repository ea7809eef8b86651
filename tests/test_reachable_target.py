"""The "reachable" target maker and Gradient Canceling aimed at it (issue #16, items 3.1–3.2), on digits LR."""

import json
import math

import pytest
import torch

from poisonlab.attacks import build_attack
from poisonlab.attacks.reachable_target import ReachableConfig, search_reachable
from poisonlab.attacks.targets import TargetContext, make_target
from poisonlab.cli.main import main
from poisonlab.data import PoisonedDataset
from poisonlab.errors import ConfigError, UnsupportedError
from poisonlab.protocol import RunSpec, prepare
from poisonlab.protocol.reachability import threshold_report
from poisonlab.seeding import torch_generator
from poisonlab.training import Victim, accuracy

EPOCHS = 100  # the default recipe on digits: the clean victim's own τ_gauge is then well below ε
FRACTION = 0.1
GC = {"init": "plan", "steps": 600, "lr": 0.05}
#: limit 0.5, not the default 0.8: on digits GC's residual at a limit-0.8 target (τ_gauge / ε = 0.77)
#: stalls at 0.061 whatever the solver (600–2000 steps, lr 0.02–0.1, cosine; measured), and falls to
#: 0.021 at τ_gauge / ε = 0.52 and 0.0066 at 0.50 (the gauge is a relaxation: it lets p(x) = e_k exactly)
LIMIT = 0.5
SEARCH = {"steps": 30, "step": 0.01, "limit": LIMIT}


@pytest.fixture(scope="module")
def digits():
    prep, spec = prepare(RunSpec(dataset="digits", model="lr", epochs=EPOCHS))
    model = spec.train(prep.train, 0)
    return prep, Victim(spec, 0, {k: v.clone() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module")
def made(digits):
    prep, victim = digits
    ctx = TargetContext(prep.train, prep.bounds, FRACTION)
    return make_target("reachable", victim.clean_model(), prep.val, SEARCH, context=ctx)


def test_the_target_passes_the_gauge_and_is_more_damaging(digits, made):
    """τ_gauge of the returned target, recomputed by the threshold report (one LP, independent of the
    search's bookkeeping), is ≤ limit·ε; its D_v and test accuracy are below the clean victim's."""
    prep, victim = digits
    target, info = made
    clean = victim.clean_model()
    th = threshold_report(target, prep)
    assert th.tau_gauge is not None and th.tau_gauge <= LIMIT * FRACTION * (1 + 1e-6), th.tau_gauge
    assert th.tau_gauge == pytest.approx(info["tau_gauge"], rel=1e-4)
    assert info["tau_gauge_clean"] < info["tau_gauge_bound"] == pytest.approx(LIMIT * FRACTION)
    assert accuracy(target, prep.val) == pytest.approx(info["val_accuracy_target"])
    assert info["val_accuracy_target"] < accuracy(clean, prep.val) - 1.0, info["val_accuracy_target"]
    assert accuracy(target, prep.test) < accuracy(clean, prep.test)
    assert 0 < info["best_step"] <= SEARCH["steps"] and info["relative_change"] > 0
    taus = [t for _, t, _, _ in info["trace"]]
    assert len(taus) == SEARCH["steps"] + 1 and max(taus) > 0.9 * LIMIT * FRACTION  # it went to the constraint


def test_gc_reaches_the_reachable_target(digits, made):
    """The restated goal at small scale: GC (plan labels) at ε leaves a relative gradient norm ≤ 0.05
    at the target, and the victim retrained from scratch agrees with the target on ≥ 97 % of the
    test points (measured: 0.0066 and 97.49 %)."""
    import tempfile
    from pathlib import Path

    from poisonlab.artifacts import save_state

    prep, victim = digits
    target, _ = made
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        save_state(path, target.state_dict())
        attack = build_attack("gc", {**GC, "target": str(path)})
        ps = attack.poison(prep.attack_data(), victim, FRACTION, generator=torch_generator(0, "attack"))
    retrained = victim.retrain(PoisonedDataset.combine(prep.train, ps).dataset)
    rep = attack.assess(ps, retrained, prep.test)
    assert ps.info["tau_gauge"] <= LIMIT * ps.info["eps"] * (1 + 1e-6)
    assert ps.info["final_rel_grad_norm"] <= 0.05, ps.info["final_rel_grad_norm"]
    assert rep["retrained_target_agreement"] >= 97.0, rep["retrained_target_agreement"]


def test_gc_target_reachable_end_to_end_from_the_cli(tmp_path):
    """``poisonlab run --attack gc -A target=reachable``: the maker runs inside gc at the run's ε
    (its options in the group ``reachable``), and its target is the one saved with the run."""
    out = tmp_path / "run"
    assert main(["run", "--dataset", "digits", "--attack", "gc", "--fraction", str(FRACTION), "-A", "target=reachable",
                 "-A", "init=plan", "-A", "steps=100", "-A", "lr=0.05", "-A", "reachable.steps=10",
                 "-A", "reachable.step=0.01", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "result.json").read_text())
    info = res["attack_info"]
    assert info["target"] == "reachable" and info["target_info"]["source"] == "reachable"
    assert info["target_info"]["steps"] == 10 and info["target_info"]["eps"] == pytest.approx(info["eps"])
    assert info["tau_gauge"] <= 0.8 * info["eps"] * (1 + 1e-6)
    assert info["final_rel_grad_norm"] < info["initial_rel_grad_norm"]
    assert (out / "target.safetensors").is_file()


def test_unsupported_victims_fail_before_any_work(digits, monkeypatch):
    """No box gauge for an MLP: gc with target 'reachable' raises UnsupportedError before training or
    searching anything; so does the maker itself, and on unbounded data."""
    import poisonlab.attacks.reachable_target as rt
    from poisonlab.data.bounds import Bounds
    from poisonlab.training import VictimSpec

    prep, victim = digits
    searched = []
    monkeypatch.setattr(rt, "search_reachable", lambda *a, **k: searched.append(1))
    spec = VictimSpec("nn").for_data(prep.train.input_shape, 10, 64)
    mlp = Victim(spec, 0, spec.build(0).state_dict())
    with pytest.raises(UnsupportedError, match="linear softmax"):
        build_attack("gc", {"target": "reachable"}).poison(prep.attack_data(), mlp, 0.1, generator=torch.Generator())
    assert not searched
    ctx = TargetContext(prep.train, prep.bounds, 0.1)
    with pytest.raises(UnsupportedError, match="linear softmax"):
        search_reachable(spec.build(0), prep.val, ctx)
    free = TargetContext(prep.train, Bounds(torch.tensor(-math.inf), torch.tensor(math.inf)), 0.1)
    with pytest.raises(UnsupportedError, match="unbounded"):
        search_reachable(victim.spec.build(0), prep.val, free)


def test_bad_options_and_missing_context_raise(digits):
    prep, victim = digits
    for bad in ({"limit": 1.5}, {"limit": 0}, {"band": 2}, {"steps": -1}, {"step": 0}, {"fraction": -0.1}, {"nope": 1}):
        with pytest.raises(ConfigError):
            build_attack("gc", {"target": "reachable", **{f"reachable.{k}": v for k, v in bad.items()}})
    with pytest.raises(ConfigError, match="radius"):
        build_attack("gc", {"target": "reachable", "radius": 0.1})
    with pytest.raises(ConfigError, match="poisoning problem"):
        make_target("reachable", victim.clean_model(), prep.val, {})
    assert build_attack("gc", {"target": "reachable", "reachable": {"steps": 5}}).config.reachable == ReachableConfig(steps=5)


def test_infeasible_budget_is_a_clear_error(digits):
    """A budget below the clean victim's own τ_gauge that the steps cannot reach: the error names the
    smallest τ_gauge seen, after the search (not a silently infeasible target)."""
    prep, victim = digits
    ctx = TargetContext(prep.train, prep.bounds, 1e-6)
    with pytest.raises(ConfigError, match="no iterate had"):
        search_reachable(victim.clean_model(), prep.val, ctx, ReachableConfig(steps=2))


def test_targets_go_through_the_cache_keyed_by_the_problem(digits, tmp_path):
    from poisonlab.cache import ArtifactCache

    prep, victim = digits
    c = ArtifactCache(tmp_path / "c")
    opts = {"steps": 3}
    ctx = TargetContext(prep.train, prep.bounds, FRACTION)
    a, ia = make_target("reachable", victim.clean_model(), prep.val, opts, cache=c, context=ctx)
    b, ib = make_target("reachable", victim.clean_model(), prep.val, opts, cache=c, context=ctx)
    other = TargetContext(prep.train, prep.bounds, 2 * FRACTION)
    _, io = make_target("reachable", victim.clean_model(), prep.val, opts, cache=c, context=other)
    assert (ia["cache"], ib["cache"], io["cache"]) == ("miss", "hit", "miss")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_gc_settings_follow_the_makers_plan_unless_set():
    """gc's init / steps / lr left null: the "reachable" maker's plan (what its certificate was measured
    to be reached with); gc's own defaults for GradPC and saved targets; a given option always wins, and
    the caller's own label mix keeps init off the plan."""
    from poisonlab.attacks.gc import DEFAULT_INIT, DEFAULT_LR, DEFAULT_STEPS, GCSettings
    from poisonlab.attacks.reachable_target import REACHABLE_PLAN

    def settings(**opts):
        return build_attack("gc", opts).config.settings()

    plan = REACHABLE_PLAN
    assert (plan.init, plan.steps, plan.lr) == ("plan", 600, 0.05)
    assert settings(target="reachable") == GCSettings(plan.init, plan.steps, plan.lr, "target 'reachable'")
    assert settings() == GCSettings(DEFAULT_INIT, DEFAULT_STEPS, DEFAULT_LR, None) == GCSettings("random", 300, 0.02, None)
    assert settings(target="t.safetensors") == GCSettings("random", 300, 0.02, None)
    assert settings(target="reachable", steps=50, lr=0.1, init="random") == GCSettings("random", 50, 0.1, None)
    assert settings(target="reachable", steps=50) == GCSettings("plan", 50, plan.lr, "target 'reachable'")
    assert settings(target="reachable", class_proportions=[1] * 10).init == "random"
    with pytest.raises(ConfigError, match="radius"):
        build_attack("gc", {"target": "t.safetensors", "init": "plan", "radius": 0.1})


def test_gc_on_the_reachable_target_reaches_it_with_its_defaults(digits):
    """The plan hand-off at small scale: gc with ``target: reachable`` and no GC option runs the maker's
    plan (plan labels, its steps and step size) and leaves a residual below the 0.05 goal, and below
    what gc's generic defaults (random labels, 300 steps of 0.02) leave on the same target (on MNIST LR
    at ε = 0.03: 0.023 against 0.51)."""
    prep, victim = digits
    gen = lambda: torch_generator(0, "attack")  # noqa: E731
    ps = build_attack("gc", {"target": "reachable", "reachable": SEARCH}).poison(prep.attack_data(), victim, FRACTION, generator=gen())
    info = ps.info
    assert info["plan_from"] == "target 'reachable'"
    assert info["settings"] == {"init": "plan", "steps": 600, "lr": 0.05} and info["steps_run"] == 600
    counts = torch.bincount(ps.y, minlength=10).double() / len(ps.y)
    assert torch.allclose(counts, torch.tensor(info["gauge_label_mix"]).double(), atol=1.0 / len(ps.y) + 1e-9)
    assert info["tau_gauge"] <= LIMIT * info["eps"] * (1 + 1e-6)
    assert info["final_rel_grad_norm"] <= 0.05, info["final_rel_grad_norm"]
    generic = build_attack("gc", {"target": "reachable", "reachable": SEARCH, "init": "random", "steps": 300, "lr": 0.02}
                           ).poison(prep.attack_data(), victim, FRACTION, generator=gen())
    assert generic.info["plan_from"] is None
    assert info["final_rel_grad_norm"] < generic.info["final_rel_grad_norm"], (
        info["final_rel_grad_norm"], generic.info["final_rel_grad_norm"])
