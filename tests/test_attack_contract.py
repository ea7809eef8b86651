"""The attack contract, checked for EVERY registered attack (one table, STYLE.md)."""

import pytest
import torch

from poisonlab.attacks import ATTACKS, build_attack
from poisonlab.attacks.base import Attack, AttackConfig, register_attack
from poisonlab.data import load_dataset, poison_count, split_train_val
from poisonlab.data.types import PoisonSet
from poisonlab.errors import ConfigError, ContractError
from poisonlab.registry import Registry
from poisonlab.training import TrainConfig, Victim, VictimSpec

# Small-but-real options so every attack runs in seconds on digits. Every registered attack must
# have an entry (test_every_attack_has_fast_options), so a new attack cannot slip past this table.
FAST_OPTIONS: dict[str, dict] = {
    "label_flip": {},
    "tgda": {"epochs": 2, "n": 2, "pretrain.epochs": 1, "solver.iters": 5, "generator_options": {"hidden": [32, 16]}},
    "back_gradient": {"epochs": 2, "k": 2},
    "min_max": {"epochs": 2},
    "metapoison": {"outer_steps": 2, "ensemble": 2, "stagger_epochs": 1, "radius": 0.1},
    "gc": {"target_options": {"eps_w": 0.05, "steps": 1, "lr": 1.0}, "steps": 10, "lr": 0.05},
    "unlearnable": {"rounds": 2, "pgd_steps": 5},
    "feature_targeted": {"target_options.steps": 5, "gc_steps": 20, "invert_steps": 20},
    "i_min_max": {"steps": 3},
    "gradient_matching": {"steps": 5, "restarts": 1},
}


def test_every_attack_has_fast_options():
    assert sorted(FAST_OPTIONS) == ATTACKS.names()


@pytest.fixture(scope="module")
def setting():
    b = load_dataset("digits")
    data = split_train_val(b.train, torch.Generator().manual_seed(0))
    spec = VictimSpec("lr", data.train.input_shape, 10, TrainConfig(epochs=3, batch_size=64, device="cpu"))
    model = spec.train(data.train, seed=0)
    return data, Victim(spec, 0, {k: v.clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("name", ATTACKS.names())
@pytest.mark.parametrize("fraction", [0.03, 0.1])
def test_contract(setting, name, fraction):
    """Each attack's own ``_craft`` keeps the contract — checked on its raw output, not on what the
    base class's final check lets through (that check is tested by the cheaters below)."""
    data, victim = setting
    before = (data.train.x.clone(), data.train.y.clone(), data.val.x.clone())
    attack = build_attack(name, FAST_OPTIONS.get(name))
    n = poison_count(fraction, len(data.train))
    raw = attack._craft(data, victim, n, generator=torch.Generator().manual_seed(1), progress=False, cache=None)
    x, y = raw.x.detach().cpu(), raw.y.detach().cpu()
    src = raw.source_index.detach().cpu() if len(raw.source_index) else torch.full((n,), -1)
    assert len(x) == n and y.shape == (n,) and src.shape == (n,)
    assert x.shape[1:] == data.train.x.shape[1:] and torch.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0  # digits: the pixel box
    assert y.min() >= 0 and y.max() < data.num_classes and src.min() >= -1 and src.max() < len(data.train)
    if attack.clean_label:
        assert (src >= 0).all() and torch.equal(y.long(), data.train.y[src])
    assert torch.equal(before[0], data.train.x) and torch.equal(before[1], data.train.y) and torch.equal(before[2], data.val.x)
    final = attack.poison(data, victim, fraction, generator=torch.Generator().manual_seed(1))
    assert torch.equal(final.x, x.float()) and torch.equal(final.y, y.long())  # the wrapper changes nothing valid


@pytest.mark.parametrize("name", ATTACKS.names())
def test_deterministic_under_seed(setting, name):
    data, victim = setting
    attack = build_attack(name, FAST_OPTIONS.get(name))
    a = attack.poison(data, victim, 0.03, generator=torch.Generator().manual_seed(7))
    b = attack.poison(data, victim, 0.03, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.source_index, b.source_index)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_zero_budget_gives_no_poisons(setting, name, monkeypatch):
    """A zero budget is an empty poison set of the data's input shape, without running the attack,
    but only after the attack's options and support have been checked."""
    data, victim = setting
    attack = build_attack(name, FAST_OPTIONS.get(name))
    calls = []
    monkeypatch.setattr(type(attack), "_craft", lambda *a, **k: calls.append("craft"))
    monkeypatch.setattr(type(attack), "check_supported", lambda self, d, v: calls.append("checked"))
    out = attack.poison(data, victim, 0.0, generator=torch.Generator().manual_seed(0))
    assert len(out) == 0 and out.x.shape == (0, *data.train.x.shape[1:]) and out.x.dtype == torch.float32
    assert out.y.dtype == torch.int64 and out.source_index.shape == (0,)
    assert calls == ["checked"]  # supported-check ran, the attack did not
    with pytest.raises(ConfigError):  # a bad fraction is still an error at zero cost
        attack.poison(data, victim, -0.1, generator=torch.Generator())


@pytest.mark.parametrize("name", ATTACKS.names())
def test_unknown_option_and_bad_fraction_rejected(setting, name):
    data, victim = setting
    with pytest.raises(ConfigError, match="no_such_option"):
        build_attack(name, {"no_such_option": 1})
    with pytest.raises(ConfigError):
        build_attack(name, FAST_OPTIONS.get(name)).poison(data, victim, 1.5, generator=torch.Generator())


def test_label_flip_rule_and_random(setting):
    data, victim = setting
    rule = build_attack("label_flip", {"mode": "rule"}).poison(data, victim, 0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rule.y, 9 - data.train.y[rule.source_index])
    assert torch.equal(rule.x, data.train.x[rule.source_index])
    assert len(set(rule.source_index.tolist())) == len(rule)
    rnd = build_attack("label_flip", {"mode": "random"}).poison(data, victim, 0.1, generator=torch.Generator().manual_seed(0))
    assert (rnd.y != data.train.y[rnd.source_index]).all()
    with pytest.raises(ConfigError, match="mode"):
        build_attack("label_flip", {"mode": "sideways"})


class _Cheater(Attack[AttackConfig]):
    """Returns one point too many, with pixels out of range, and mutates its input."""

    clean_label = True

    def __init__(self, fault: str):
        super().__init__()
        self.fault = fault

    def _craft(self, data, victim, n_poison, *, generator, progress, cache=None):
        src = torch.arange(n_poison)
        x, y = data.train.x[src].clone(), data.train.y[src].clone()
        if self.fault == "count":
            return PoisonSet(torch.cat([x, x[:1]]), torch.cat([y, y[:1]]), torch.cat([src, src[:1]]))
        if self.fault == "range":
            return PoisonSet(x + 2.0, y, src)
        if self.fault == "label":
            return PoisonSet(x, (y + 1) % 10, src)
        if self.fault == "mutate":
            data.train.x[0] += 0.5
            return PoisonSet(x, y, src)
        raise AssertionError


@pytest.mark.parametrize("fault,match", [("count", "budget"), ("range", r"\[0, 1\]"), ("label", "changed labels"), ("mutate", "mutated")])
def test_contract_violations_are_caught(fault, match):
    b = load_dataset("digits")
    data = split_train_val(b.train, torch.Generator().manual_seed(0))
    victim = Victim(VictimSpec("lr", data.train.input_shape, 10, TrainConfig(epochs=1, device="cpu")), 0)
    with pytest.raises(ContractError, match=match):
        _Cheater(fault).poison(data, victim, 0.05, generator=torch.Generator())


def test_registry_rejects_duplicates():
    r: Registry[int] = Registry("thing")
    r.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.add("a", 2)
    class Dup(Attack[AttackConfig]):
        def _craft(self, *a, **k):
            return None

    with pytest.raises(ValueError):
        register_attack("label_flip")(Dup)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_config_documents_every_field_and_group(name):
    """Every option (and every option of its groups) has an ``Attributes:`` entry saying its default
    — what help() and the API reference show (the same check as tests/test_option_docs.py)."""
    from test_option_docs import undocumented

    assert undocumented(ATTACKS.get(name).Config, groups=True) == []


@pytest.mark.parametrize("name,old,new", [("tgda", "cg_iters", "solver.iters"), ("tgda", "select_every", "selection.every"),
                                          ("tgda", "pretrain_epochs", "pretrain.epochs"),
                                          ("gc", "target_steps", "target_options.steps"),
                                          ("gradient_matching", "eps_w", "target_options.eps_w"),
                                          ("feature_targeted", "eps_w", "target_options.eps_w"),
                                          ("min_max", "checkpoint", "checkpoint.dir")])
def test_a_flat_name_for_a_grouped_option_is_an_unknown_option(name, old, new):
    """Grouped options have one name, the dotted one: the flat name is an unknown option, and the
    error lists the valid ones (the group among them); a group given a plain value says how to set it."""
    value = "/tmp/ck" if old == "checkpoint" else 3
    group = new.split(".")[0]
    needle = (rf"{group} is an option group; give it as a mapping or as {group}\.<option>=value" if old == group
              else rf"unknown option\(s\) \['{old}'\]; valid options: .*'{group}'")
    with pytest.raises(ConfigError, match=needle):
        build_attack(name, {old: value})
    group, field = new.split(".")
    assert build_attack(name, {new: value}).options()[group][field] == value
