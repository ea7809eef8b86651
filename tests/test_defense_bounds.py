"""Every registered defense on data that is not [0, 1] images and on models in no registry.

Cases: (a) ``tabular`` — a user-defined MLP (in no registry, no ``features`` / ``head``) on
standardised (N, 10) features with per-feature bounds (one feature unbounded), (b) ``digits`` —
sklearn digits images (N, 1, 8, 8) in [0, 1] with the registered ``lr`` victim, (c) ``no_linear``
— a user module without any ``nn.Linear`` (a raw parameter matrix) on the tabular data. Each gets
label-flip poisons appended (``PoisonedDataset.combine``). A defense either returns one finite score
per point, a keep mask, diagnostics and working detection metrics, or — exactly for the cases of
:data:`UNSUPPORTED` — raises ``UnsupportedError`` before any training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from extras import param
from torch import nn

from poisonlab.data import PoisonSet, PoisonedDataset, data_from_arrays, poison_count
from poisonlab.defenses import DEFENSES, build_defense
from poisonlab.errors import UnsupportedError
from poisonlab.protocol.defend import detection_metrics
from poisonlab.seeding import torch_generator
from poisonlab.training import TrainConfig, Victim, VictimSpec

FRACTION = 0.05

#: (case, defense) -> why the defense cannot run there (UnsupportedError before any work)
UNSUPPORTED = {
    ("no_linear", "spectral"): "reads the input of the victim's nn.Linear head",
    ("no_linear", "sever"): "params='head' differentiates the victim's nn.Linear head",
    ("no_linear", "influence"): "params='head' differentiates the victim's nn.Linear head",
}
#: ART's detectors on a model without submodules: ART has no layer to read; they raise
#: UnsupportedError too, but only when handing the trained model to ART (no check_supported yet)
UNSUPPORTED_LATE = {
    ("no_linear", "art_activation"): "ART reads a layer of the model; it has no submodules",
    ("no_linear", "art_spectral"): "ART reads a layer of the model; it has no submodules",
}

# small settings so the table stays fast; defenses not named here run with their defaults
OPTIONS = {
    "influence": {"cg_max_iter": 50},
    "maxup": {"m": 2},
    "knn": {"k": 5},
    "art_activation": {"nb_dims": 5},
}


class TabularMLP(nn.Module):
    """A user's own model: no ``features`` / ``head`` attributes, its head is the last nn.Linear."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 16), nn.Tanh())
        self.out = nn.Linear(16, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class RawLinear(nn.Module):
    """A user's own model without any nn.Linear (or any submodule): logits = x W + b."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.w = nn.Parameter(0.01 * torch.randn(d, c))
        self.b = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


def _label_flip(train, fraction: float) -> PoisonedDataset:
    n = poison_count(fraction, len(train))
    src = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n]
    flipped = (train.y[src] + 1) % train.num_classes
    return PoisonedDataset.combine(train, PoisonSet(train.x[src].clone(), flipped, src))


def _tabular():
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=540, n_features=10, n_informative=6, n_redundant=2, n_classes=3,
                               n_clusters_per_class=1, class_sep=1.5, random_state=0)
    x = (x - x.mean(0)) / x.std(0)  # standardised features
    lo, hi = x.min(0) - 0.5, x.max(0) + 0.5  # per-feature bounds, not [0, 1]
    lo[3], hi[3] = -np.inf, np.inf  # one unbounded feature
    return data_from_arrays(x.astype(np.float32), y, bounds=(lo, hi), name="tabular")


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return data_from_arrays(x, d.target, name="digits")


def _victim(case: str, data) -> Victim:
    d, c = data.input_shape, data.num_classes
    if case == "digits":
        spec = VictimSpec("lr", recipe=TrainConfig(lr=0.5, epochs=15, batch_size=64, device="cpu"))
    elif case == "tabular":
        spec = VictimSpec("tabular_mlp", recipe=TrainConfig(lr=0.2, epochs=30, batch_size=32, device="cpu"),
                          factory=lambda: TabularMLP(d[0], c))
    else:
        spec = VictimSpec("raw_linear", recipe=TrainConfig(lr=0.2, epochs=30, batch_size=32, device="cpu"),
                          factory=lambda: RawLinear(d[0], c))
    return Victim(spec.for_data(d, c), seed=0)


CASES = ("tabular", "digits", "no_linear")


@pytest.fixture(scope="module")
def prepared():
    """case -> (poisoned D, reference D_v, victim, the victim trained on D)."""
    tab, dig = _tabular(), _digits()
    out = {}
    for case, data in (("tabular", tab), ("digits", dig), ("no_linear", tab)):
        mixed = _label_flip(data.train, FRACTION)
        victim = _victim(case, data)
        trained = victim.spec.train(mixed.dataset, victim.seed)
        out[case] = (mixed, data.val, victim, trained)
    return out


def _names() -> list:
    return [param(n) for n in DEFENSES.names()]


def test_tables_name_registered_defenses():
    for table in (UNSUPPORTED, UNSUPPORTED_LATE, OPTIONS):
        for key in table:
            name = key[1] if isinstance(key, tuple) else key
            assert name in DEFENSES.names(), f"{name} is not a registered defense"


def test_data_is_what_the_table_claims(prepared):
    mixed, _, victim, model = prepared["tabular"]
    assert mixed.dataset.x.ndim == 2 and not mixed.dataset.bounds.is_unit and not mixed.dataset.bounds.is_finite
    assert victim.spec.is_custom and not hasattr(model, "head")
    digits, _, lr, _ = prepared["digits"]
    assert digits.dataset.is_image and digits.dataset.bounds.is_unit and lr.spec.model == "lr"
    assert not any(isinstance(m, nn.Linear) for m in prepared["no_linear"][3].modules())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", _names())
def test_defense_on_any_data_and_model(name, case, prepared, monkeypatch):
    mixed, reference, victim, trained = prepared[case]
    n = len(mixed)
    defense = build_defense(name, {**OPTIONS.get(name, {}), "fraction": FRACTION})
    if (case, name) in UNSUPPORTED:
        def no_training(*_a, **_k):
            raise AssertionError(f"{name} trained a model before raising UnsupportedError")

        monkeypatch.setattr("poisonlab.training.victim.train", no_training)
        monkeypatch.setattr("poisonlab.defenses.maxup.train", no_training)
        with pytest.raises(UnsupportedError) as err:
            defense.score(mixed, victim, generator=torch_generator(0, "defense"), reference=reference)
        assert name in str(err.value) and "\n" not in str(err.value)
        return
    if (case, name) in UNSUPPORTED_LATE:
        with pytest.raises(UnsupportedError):
            defense.score(mixed, victim, generator=torch_generator(0, "defense"), model=trained, reference=reference)
        return
    x_before = mixed.dataset.x.clone()
    g = torch_generator(0, "defense")
    out = defense.defend(mixed, victim, defense.score(mixed, victim, generator=g, model=trained, reference=reference), generator=g)
    assert torch.equal(mixed.dataset.x, x_before)
    assert out.scores.shape == (n,) and out.scores.dtype == torch.float64 and torch.isfinite(out.scores).all()
    assert out.keep.shape == (n,) and out.keep.dtype == torch.bool
    assert out.n_removed == (poison_count(FRACTION, n) if defense.removes else 0)
    assert isinstance(out.model, nn.Module) and isinstance(out.info, dict)
    json.dumps(out.info)  # diagnostics are JSON-serialisable
    det = detection_metrics(mixed.is_poison, out.scores, out.keep)
    assert 0.0 <= det["roc_auc"] <= 1.0 and det["n_removed"] == out.n_removed
    with torch.no_grad():  # the defended victim still maps the inputs to logits
        assert out.model(mixed.dataset.x[:4]).shape == (4, mixed.dataset.num_classes)


def test_maxup_perturbations_stay_in_the_per_feature_bounds(prepared):
    """MaxUp on the tabular data: every perturbed input it trains on lies in the data's bounds
    (which are not [0, 1]), and its noise is on the features' scale (σ · span, σ where unbounded)."""
    mixed, reference, victim, trained = prepared["tabular"]
    b = mixed.dataset.bounds
    seen: list[torch.Tensor] = []
    hook = trained.body.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        detail = build_defense("maxup", {"m": 3, "sigma": 0.5}).score(
            mixed, victim, generator=torch_generator(0, "defense"), model=trained)
    finally:
        hook.remove()
    x = torch.cat(seen)
    assert b.contains(x) and (x < 0).any() and (x > 1).any()
    span = b.span()
    finite = torch.isfinite(span)
    assert detail.info["noise_std_max"] == pytest.approx(0.5 * float(span[finite].max()))
    assert detail.info["noise_std_min"] == pytest.approx(min(0.5, 0.5 * float(span[finite].min())))


@pytest.mark.parametrize("name", ["sever", "influence"])
def test_params_all_needs_no_head(name, prepared):
    """The remedy the UnsupportedError names: params='all' differentiates any module's parameters."""
    mixed, reference, victim, trained = prepared["no_linear"]
    detail = build_defense(name, {**OPTIONS.get(name, {}), "params": "all", "fraction": FRACTION}).score(
        mixed, victim, generator=torch_generator(0, "defense"), model=trained, reference=reference)
    assert detail.scores.shape == (len(mixed),) and torch.isfinite(detail.scores).all()


# ------------------------------------------------------------ victims: bad options, non-image shapes
@pytest.mark.parametrize("name,options,needle", [
    ("nn", {"hidden": "banana"}, "model 'nn': hidden must be a list of positive integers, got 'banana'"),
    ("nn", {"hidden": [64, 0]}, "hidden must be a list of positive integers"),
    ("nn", {"hidden": []}, "hidden must be a list of positive integers"),
    ("nn", {"hidden": [2.5]}, "hidden must be a list of positive integers"),
    ("cnn", {"channels": [8]}, "model 'cnn': channels must be a list of 2 positive integers"),
    ("cnn", {"channels": "wide"}, "channels must be a list of 2 positive integers"),
    ("resnet18", {"width": "x"}, "model 'resnet18': width must be a positive integer, got 'x'"),
])
def test_bad_model_options_raise_one_config_error(name, options, needle):
    from poisonlab.errors import ConfigError
    from poisonlab.models.victims import build_victim

    with pytest.raises(ConfigError) as err:
        build_victim(name, (1, 8, 8), 3, **options)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_model_options_that_are_fine():
    from poisonlab.models.victims import build_victim

    assert build_victim("nn", (10,), 3, hidden=16).head.in_features == 16  # one integer = one layer
    assert build_victim("nn", (10,), 3, hidden=[8, 1e1]).head.in_features == 10  # YAML's 1e1 is a float
    assert build_victim("cnn", (1, 8, 8), 3, channels=[4, 8]).head.out_features == 3


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_convolutional_victims_need_images(name):
    from poisonlab.models.victims import build_victim

    for shape in ((10,), (4, 5)):
        with pytest.raises(UnsupportedError, match=r"needs image inputs of shape \(C, H, W\)"):
            build_victim(name, shape, 3)


def test_cli_run_bad_model_option_exits_2_with_one_line(tmp_path, capsys):
    from poisonlab.cli.main import main

    code = main(["run", "--model", "nn", "-M", "hidden=banana", "--epochs", "1", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == "poisonlab: error: model 'nn': hidden must be a list of positive integers, got 'banana'"
