"""Components from outside the package (issue #27): an attack, a defense, a target maker and a victim
registered (a) by decorator in user code and (b) by the entry points of an installed distribution,
each used through the API (``pl.run`` / ``pl.poison`` / ``pl.defend`` / ``pl.threshold``) and the CLI
(``poisonlab list``, ``run --attack / --defense``, ``target --target``); a broken plugin is named.

The plugin's components are written once, below; the entry-point distribution in ``tmp_path`` is
made from their source (a package and its ``*.dist-info`` with ``METADATA`` and
``entry_points.txt``), as ``pip install`` would leave it.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

import poisonlab as pl
from poisonlab.attacks import ATTACKS
from poisonlab.attacks.targets import TARGETS
from poisonlab.cli.main import main
from poisonlab.defenses import DEFENSES
from poisonlab.errors import ConfigError, PluginError, UnsupportedError
from poisonlab.models.victims import VICTIMS
from poisonlab.training import VictimSpec

VICTIM = {"epochs": 3, "device": "cpu"}
RUN = ["--dataset", "digits", "--model", "lr", "--epochs", "3", "--device", "cpu", "--quiet"]


# ---------------------------------------------------------------------------- the plugin's components
@dataclasses.dataclass(frozen=True, kw_only=True)
class ShiftConfig(pl.AttackConfig):
    """Options of the test attack.

    Attributes:
        shift: Added to each copied point's label (mod the number of classes). Default 1.
    """

    shift: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.shift, int) or self.shift < 1:
            raise pl.ConfigError(f"attack 'shift': shift must be an integer >= 1, got {self.shift!r}")


class ShiftLabels(pl.Attack[ShiftConfig]):
    """Copies of the first n training points, labels shifted by ``shift``."""

    summary = "test plugin: copies of the first points with shifted labels"

    def _craft(self, data, victim, n_poison, *, generator, progress, cache):
        x, y = data.train.x[:n_poison].clone(), data.train.y[:n_poison]
        return pl.PoisonSet(x, (y + self.config.shift) % data.train.num_classes, torch.arange(n_poison))


class Centroid(pl.Defense[pl.DefenseConfig]):
    """Distance to the centroid of the point's own class (the sphere defense in four lines)."""

    summary = "test plugin: distance to the class centroid"

    def _score(self, data, victim, *, generator, model, reference, progress):
        x = data.x.flatten(1).double()
        means = torch.stack([x[data.y == c].mean(0) if (data.y == c).any() else x.mean(0)
                             for c in range(data.num_classes)])
        return torch.linalg.vector_norm(x - means[data.y], dim=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaleConfig(pl.TargetConfig):
    """Options of the test target maker.

    Attributes:
        scale: Every parameter of the clean victim times this (nonzero). Default 0.5.
    """

    scale: float = 0.5

    def __post_init__(self) -> None:
        if not self.scale:
            raise pl.ConfigError("target 'scaled': scale must be nonzero")


class Scaled(pl.TargetMaker[ScaleConfig]):
    """The clean victim with every parameter times ``scale``: a positive scale keeps a linear victim's
    predictions, a negative one reverses their order."""

    summary = "test plugin: the clean victim's parameters times scale"
    report_keys = ("scale",)
    metadata_keys = ("scale",)

    def check_supported(self, model, input_shape, bounds):
        if len(input_shape) != 3:
            raise pl.UnsupportedError(f"target 'scaled' is for images, got inputs of shape {tuple(input_shape)}")

    def make(self, model, val, *, progress=False, context=None):
        target = copy.deepcopy(model)
        with torch.no_grad():
            for p in target.parameters():
                p.mul_(self.config.scale)
        return target.eval(), {"source": "scaled", "scale": self.config.scale}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TinyConfig(pl.ArchitectureConfig):
    """Options of the test victim.

    Attributes:
        hidden: Width of the hidden layer. Default 8.
    """

    hidden: int = 8


class TinyMLP(pl.Architecture[TinyConfig]):
    """One hidden layer on the flattened input."""

    summary = "test plugin: one hidden layer"

    def build(self, input_shape, num_classes):
        d = 1
        for s in input_shape:
            d *= s
        return nn.Sequential(nn.Flatten(), nn.Linear(d, self.config.hidden), nn.ReLU(), nn.Linear(self.config.hidden, num_classes))


COMPONENTS = (ShiftConfig, ShiftLabels, Centroid, ScaleConfig, Scaled, TinyConfig, TinyMLP)


def _record(result) -> dict:
    """A run's or a threshold's result as its record (``to_dict()``, the ``result.json`` format)."""
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def _forget(names: dict) -> None:
    for registry, name in names.items():
        if name in registry._items:
            registry.remove(name)


# ---------------------------------------------------------------------------- (a) by decorator
@pytest.fixture
def decorated():
    """The components registered by decorator, as a user's module or notebook cell does; removed after."""
    names = {ATTACKS: "shift", DEFENSES: "centroid", TARGETS: "scaled", VICTIMS: "tiny"}

    @pl.register_attack("shift")
    class MyShift(ShiftLabels):
        pass

    @pl.register_defense("centroid")
    class MyCentroid(Centroid):
        pass

    @pl.register_target("scaled")
    class MyScaled(Scaled):
        pass

    @pl.register_victim("tiny")
    class MyTiny(TinyMLP):
        pass

    try:
        yield names
    finally:
        _forget(names)


def test_decorated_components_through_the_api(decorated):
    assert ATTACKS.get("shift").name == "shift" and DEFENSES.get("centroid").name == "centroid"
    poisons = pl.poison("digits", pl.victim("lr", **VICTIM), "shift", 0.05, options={"shift": 2}, progress=False)
    n_poison = len(poisons)
    assert n_poison > 0 and poisons.source_index.tolist() == list(range(n_poison))

    rec = _record(pl.run("digits", pl.victim("tiny", **VICTIM, options={"hidden": 16}), "shift", 0.05,
                         defense="centroid", progress=False))
    assert rec["config"]["attack"] == "shift" and rec["config"]["defense"] == "centroid"
    assert rec["config"]["model"] == "tiny"
    assert rec["n_poison"] == n_poison

    report = pl.defend("digits", poisons, pl.victim("lr", **VICTIM), "centroid", options={"fraction": 0.05})
    # label-shifted copies sit far from their new class's centroid: far better than chance
    assert report.defense == "centroid" and report.roc_auc > 0.8 and report.n_removed > 0, report

    th = _record(pl.threshold("digits", pl.victim("lr", **VICTIM), "scaled", options={"scale": 0.5}))
    assert th["target_info"]["scale"] == 0.5
    # a positive scale keeps a linear victim's argmax, so its accuracy; a negative one reverses it
    assert th["target_test_accuracy"] == pytest.approx(th["clean_test_accuracy"])
    neg = _record(pl.threshold("digits", pl.victim("lr", **VICTIM), "scaled", options={"scale": -1.0}))
    assert neg["target_test_accuracy"] < th["clean_test_accuracy"] - 50
    # a model-targeted attack makes its target with the registered maker, by name
    gc = pl.poison("digits", pl.victim("lr", **VICTIM), "gc", 0.05, options={"target": "scaled", "steps": 2}, progress=False)
    assert gc.info["target"] == "scaled" and gc.info["target_info"]["source"] == "scaled"


def test_decorated_components_check_before_any_work(decorated, monkeypatch):
    trained = []
    train = VictimSpec.train
    monkeypatch.setattr(VictimSpec, "train", lambda self, *a, **k: trained.append(1) or train(self, *a, **k))
    x = torch.rand(40, 5)
    tabular = pl.data_from_arrays(x.numpy(), (x[:, 0] > 0.5).long().numpy(), bounds=(0.0, 1.0))
    with pytest.raises(UnsupportedError, match="'scaled' is for images"):
        pl.threshold(tabular, pl.victim("lr", **VICTIM), "scaled")
    with pytest.raises(ConfigError, match="shift must be an integer"):
        pl.run("digits", pl.victim("lr", **VICTIM), "shift", 0.05, options={"shift": 0})
    with pytest.raises(ConfigError, match=r"attack 'shift': unknown option\(s\) \['nope'\]"):
        pl.poison("digits", pl.victim("lr", **VICTIM), "shift", 0.05, options={"nope": 1})
    with pytest.raises(ConfigError, match="model 'tiny' has no option"):
        pl.run("digits", pl.victim("tiny", **VICTIM, options={"width": 3}), "shift", 0.05)
    with pytest.raises(ValueError, match="already registered"):
        pl.register_attack("shift")(ShiftLabels)
    with pytest.raises(TypeError, match="subclass of poisonlab.Defense"):
        pl.register_defense("not_a_defense")(ShiftLabels)
    assert not trained


def test_decorated_components_through_the_cli(decorated, tmp_path, capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name, summary in (("shift", ShiftLabels.summary), ("centroid", Centroid.summary), ("scaled", Scaled.summary),
                          ("tiny", TinyMLP.summary)):
        assert f"  {name:<18} {summary}" in listed

    assert main(["run", *RUN, "--attack", "shift", "-A", "shift=2", "--fraction", "0.05", "--defense", "centroid",
                 "--out", str(tmp_path / "run"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["config"]["attack"] == "shift" and rec["config"]["attack_options"] == {"shift": 2}
    assert rec["config"]["defense"] == "centroid" and (tmp_path / "run" / "result.json").is_file()

    out = tmp_path / "t.safetensors"
    assert main(["target", *RUN, "--target", "scaled", "-T", "scale=-1", "--out", str(out), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["target"] == "scaled" and made["scale"] == -1 and made["cache"] is None
    assert made["target_test_accuracy"] < made["clean_test_accuracy"] - 50
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["stage"] == "target:scaled" and float(f.metadata()["scale"]) == -1
    assert main(["threshold", *RUN, "--target", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target_info"] == {"source": str(out), "cache": None}
    assert main(["target", *RUN, "--target", "scaled", "-T", "nope=1"]) == 2
    assert "target 'scaled': unknown option(s) ['nope']" in capsys.readouterr().err


# ---------------------------------------------------------------------------- (b) by entry point
PLUGIN_IMPORTS = """\
from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

import poisonlab as pl
"""

#: a module that registers itself when imported (an entry point may name a module)
PLUGIN_VICTIMS = """\
import poisonlab as pl

from . import TinyMLP


@pl.register_victim("ep_tiny")
class EpTiny(TinyMLP):
    pass
"""

ENTRY_POINTS = """\
[poisonlab.attacks]
ep_shift = poisonlab_testplugin:ShiftLabels

[poisonlab.defenses]
ep_centroid = poisonlab_testplugin:Centroid

[poisonlab.targets]
ep_scaled = poisonlab_testplugin:Scaled

[poisonlab.victims]
ep_tiny = poisonlab_testplugin.victims
"""
EP_NAMES = {ATTACKS: "ep_shift", DEFENSES: "ep_centroid", TARGETS: "ep_scaled", VICTIMS: "ep_tiny"}


def write_distribution(site: Path, package: str, files: dict[str, str], entry_points: str) -> None:
    """``package`` (its ``files``, name -> source) and its ``*.dist-info`` under ``site``, as pip installs it."""
    (site / package).mkdir(parents=True)
    for name, text in files.items():
        (site / package / name).write_text(text)
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The plugin distribution on ``sys.path`` (its entry points visible to the registries); removed after."""
    site = tmp_path / "site"
    source = PLUGIN_IMPORTS + "\n\n" + "\n\n".join(textwrap.dedent(inspect.getsource(c)) for c in COMPONENTS)
    write_distribution(site, "poisonlab_testplugin", {"__init__.py": source, "victims.py": PLUGIN_VICTIMS}, ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    try:
        yield site
    finally:
        _forget(EP_NAMES)
        for mod in [m for m in sys.modules if m.startswith("poisonlab_testplugin")]:
            del sys.modules[mod]


def test_entry_point_components_through_the_api(installed):
    assert "ep_shift" not in ATTACKS._items  # nothing loaded before the first lookup
    rec = _record(pl.run("digits", pl.victim("ep_tiny", **VICTIM), "ep_shift", 0.05, defense="ep_centroid",
                         progress=False))
    assert rec["config"]["attack"] == "ep_shift" and rec["config"]["defense"] == "ep_centroid"
    cls = ATTACKS.get("ep_shift")
    assert cls.__module__ == "poisonlab_testplugin" and cls.name == "ep_shift" and cls.Config.__name__ == "ShiftConfig"
    assert VICTIMS.get("ep_tiny").__module__ == "poisonlab_testplugin.victims"  # registered by its own decorator

    poisons = pl.poison("digits", pl.victim("lr", **VICTIM), "ep_shift", 0.05, progress=False)
    report = pl.defend("digits", poisons, pl.victim("lr", **VICTIM), "ep_centroid", options={"fraction": 0.05})
    assert report.defense == "ep_centroid" and report.roc_auc > 0.8
    th = _record(pl.threshold("digits", pl.victim("lr", **VICTIM), "ep_scaled", options={"scale": 2.0}))
    assert th["target_info"]["scale"] == 2.0
    assert th["target_test_accuracy"] == pytest.approx(th["clean_test_accuracy"])
    assert set(EP_NAMES.values()) <= {*ATTACKS.names(), *DEFENSES.names(), *TARGETS.names(), *VICTIMS.names()}


def test_entry_point_components_through_the_cli(installed, tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-m", "poisonlab", "list"], env=env, capture_output=True, text=True,
                            timeout=120, check=True).stdout  # a fresh process finds the installed entry points
    for name, summary in (("ep_shift", ShiftLabels.summary), ("ep_centroid", Centroid.summary),
                          ("ep_scaled", Scaled.summary), ("ep_tiny", TinyMLP.summary)):
        assert f"  {name:<18} {summary}" in listed

    assert main(["run", *RUN, "--attack", "ep_shift", "--fraction", "0.05", "--defense", "ep_centroid",
                 "--out", str(tmp_path / "run"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["config"]["attack"] == "ep_shift" and rec["config"]["defense"] == "ep_centroid"
    out = tmp_path / "t.safetensors"
    assert main(["target", *RUN, "--target", "ep_scaled", "-T", "ep_scaled.scale=0.25", "--out", str(out), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["target"] == "ep_scaled" and made["scale"] == 0.25
    assert made["target_test_accuracy"] == pytest.approx(made["clean_test_accuracy"])


def test_a_broken_plugin_is_named_not_a_traceback(tmp_path, monkeypatch, capsys):
    site = tmp_path / "broken"
    write_distribution(site, "poisonlab_brokenplugin", {"__init__.py": "import a_module_nobody_installed\n"},
                       "[poisonlab.attacks]\nep_broken = poisonlab_brokenplugin:Attack\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        with pytest.raises(PluginError, match=r"entry point ep_broken = poisonlab_brokenplugin:Attack "
                                              r"\(group poisonlab.attacks, distribution poisonlab_brokenplugin 0.1\) "
                                              r"failed to load: ModuleNotFoundError"):
            ATTACKS.get("ep_broken")
        assert ATTACKS.get("label_flip").name == "label_flip"  # a registered name needs no plugin
        assert main(["run", *RUN, "--attack", "ep_broken", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert "plugin entry point ep_broken" in err and "a_module_nobody_installed" in err
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
    finally:
        sys.modules.pop("poisonlab_brokenplugin", None)


@pytest.mark.parametrize("entry_points, message", [
    ("[poisonlab.defenses]\nloss = poisonlab_clash:Centroid\n", "defense 'loss' is already registered"),
    ("[poisonlab.defenses]\nep_wrong = poisonlab_clash:ShiftLabels\n", "must be a subclass of poisonlab.Defense"),
    ("[poisonlab.targets]\nep_nothing = poisonlab_clash\n", "registered no target named 'ep_nothing'"),
])
def test_a_plugin_that_cannot_register_is_named(entry_points, message, tmp_path, monkeypatch):
    site = tmp_path / "clash"
    source = PLUGIN_IMPORTS + "\n\n" + "\n\n".join(textwrap.dedent(inspect.getsource(c)) for c in COMPONENTS)
    write_distribution(site, "poisonlab_clash", {"__init__.py": source}, entry_points)
    monkeypatch.syspath_prepend(str(site))
    registry = DEFENSES if "defenses" in entry_points else TARGETS
    try:
        with pytest.raises(PluginError, match=message):
            registry.names()
    finally:
        sys.modules.pop("poisonlab_clash", None)
    assert DEFENSES.get("loss").__module__ == "poisonlab.defenses.loss"  # the built-in keeps its name
