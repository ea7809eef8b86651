"""ART interop with the real ART package: ART's poison detectors as poisonlab defenses
(``art_activation``, ``art_spectral``) and poisonlab attacks as ART poisoning attacks
(:class:`poisonlab.interop.art.PoisonlabAttack`). Tests that need ART are skipped without it; the
"ART missing" path is simulated by masking ``art`` in ``sys.modules``."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from poisonlab.data import Dataset, PoisonedDataset, PoisonSet
from poisonlab.data.bounds import Bounds
from poisonlab.defenses import DEFENSES, build_defense
from poisonlab.errors import ConfigError, UnsupportedError
from poisonlab.seeding import torch_generator
from poisonlab.training import TrainConfig, Victim, VictimSpec

needs_art = pytest.mark.needs_extra("art")

D, PER_CLASS, N_POISON = 8, 100, 10


def _blobs() -> tuple[PoisonedDataset, torch.Tensor]:
    """Two tight, well-separated Gaussian blobs in [0, 1]^8 (class 0 at 0.25, class 1 at 0.75) plus
    N_POISON label-flip poisons: fresh class-0 points labelled 1 (the rule flip 1 − y). Obvious."""
    g = torch.Generator().manual_seed(0)
    means = torch.stack([torch.full((D,), 0.25), torch.full((D,), 0.75)])
    y = torch.arange(2).repeat_interleave(PER_CLASS)
    x = (means[y] + 0.05 * torch.randn(len(y), D, generator=g)).clamp(0, 1)
    xp = (means[0] + 0.05 * torch.randn(N_POISON, D, generator=g)).clamp(0, 1)
    mixed = PoisonedDataset.combine(Dataset(x, y, 2, "blobs"), PoisonSet(xp, torch.ones(N_POISON, dtype=torch.int64)))
    return mixed, mixed.is_poison


def _victim(model: str, input_shape=(D,), num_classes: int = 2, **options) -> Victim:
    recipe = TrainConfig(lr=0.5, epochs=30, batch_size=32, device="cpu")
    return Victim(VictimSpec(model, tuple(input_shape), num_classes, recipe, options), seed=0)


VICTIMS = {"lr": {}, "nn": {"hidden": (16,)}}


@pytest.fixture(scope="module")
def trained():
    """The blobs and, per victim, the victim spec and the model trained on the poisoned set."""
    mixed, mask = _blobs()
    out = {}
    for model, opts in VICTIMS.items():
        v = _victim(model, **opts)
        out[model] = (v, v.spec.train(mixed.dataset, v.seed))
    return mixed, mask, out


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---------------------------------------------------------------------------------------- defenses
def test_registered():
    assert {"art_activation", "art_spectral"} <= set(DEFENSES.names())


@needs_art
@pytest.mark.parametrize("model", sorted(VICTIMS))
@pytest.mark.parametrize("name", ["art_activation", "art_spectral"])
def test_detects_obvious_label_flips(trained, name, model):
    mixed, mask, victims = trained
    victim, net = victims[model]
    d = build_defense(name, {"fraction": N_POISON / len(mixed)})
    scored = d.score(mixed, victim, generator=torch_generator(1, "defense"), model=net)
    s1 = scored.scores
    s2 = d.score(mixed, victim, generator=torch_generator(1, "defense"), model=net).scores
    assert s1.shape == (len(mixed),) and s1.dtype == torch.float64 and torch.isfinite(s1).all()
    assert torch.equal(s1, s2)  # deterministic under the generator (ART's k-means is seeded)
    assert roc_auc_score(mask.numpy(), s1.numpy()) > 0.9
    assert scored.info["layer"] == "penultimate" and scored.info["n_flagged"] > 0
    assert _hooks(net) == 0  # the tap on the head is removed


@needs_art
def test_spectral_scores_are_arts_own(trained):
    """lr: ART's representation is the input itself, so the scores are ART's
    ``spectral_signature_scores`` of the (class-centred / raw) inputs, per class."""
    from art.defences.detector.poison import SpectralSignatureDefense

    mixed, _, victims = trained
    victim, net = victims["lr"]
    x, y = mixed.dataset.x.numpy(), mixed.dataset.y.numpy()
    for centre in (True, False):
        s = build_defense("art_spectral", {"centre": centre}).score(mixed, victim, generator=torch_generator(0, "d"), model=net).scores
        for c in (0, 1):
            xc = x[y == c] - (x[y == c].mean(0) if centre else 0.0)
            expected = SpectralSignatureDefense.spectral_signature_scores(xc).reshape(-1)
            np.testing.assert_allclose(s.numpy()[y == c], expected, rtol=1e-4, atol=1e-6)


@needs_art
def test_images_and_tiny_class():
    """(N, 1, 8, 8) images with a ``cnn`` victim (features / head); a class of 3 points is too
    small for ART's clustering: left out, its points score 0."""
    g = torch.Generator().manual_seed(2)
    y = torch.cat([torch.zeros(40), torch.ones(40), torch.full((3,), 2.0)]).long()
    x = (0.3 + 0.4 * (y.view(-1, 1, 1, 1) == 1) + 0.05 * torch.randn(len(y), 1, 8, 8, generator=g)).clamp(0, 1)
    data = Dataset(x, y, 3, "tiny")
    victim = Victim(VictimSpec("cnn", (1, 8, 8), 3, TrainConfig(lr=0.1, epochs=3, batch_size=32, device="cpu"),
                               {"channels": (4, 8)}), seed=0)
    net = victim.spec.train(data, 0)
    act = build_defense("art_activation")
    scored = act.score(data, victim, generator=torch_generator(0, "d"), model=net)
    s = scored.scores
    assert torch.isfinite(s).all() and scored.info["classes_skipped"] == [2]
    assert (s[y == 2] == 0).all() and (s[y != 2] > 0).any()
    spec = build_defense("art_spectral")
    assert torch.isfinite(spec.score(data, victim, generator=torch_generator(0, "d"), model=net).scores).all()
    assert _hooks(net) == 0


def test_art_missing_raises_unsupported_at_construction(monkeypatch):
    monkeypatch.setitem(sys.modules, "art", None)  # `import art` now fails
    for name in ("art_activation", "art_spectral"):
        with pytest.raises(UnsupportedError, match=r"pip install 'poisonlab\[art\]'"):
            build_defense(name)
    monkeypatch.delitem(sys.modules, "poisonlab.interop.art", raising=False)
    with pytest.raises(UnsupportedError, match=r"pip install 'poisonlab\[art\]'"):
        importlib.import_module("poisonlab.interop.art")


def test_bad_options():
    with pytest.raises(ConfigError):
        build_defense("art_activation", {"cluster_analysis": "biggest"})
    with pytest.raises(ConfigError):
        build_defense("art_spectral", {"layer": "logits"})
    with pytest.raises(ConfigError):
        build_defense("art_spectral", {"no_such_option": 1})


def test_clip_values_from_bounds():
    from poisonlab.interop import art_clip_values, bounds_from_clip_values

    assert art_clip_values(Bounds.unit(), (3,)) == (0.0, 1.0)
    lo, hi = art_clip_values(Bounds.of(([-1.0, 0.0, 2.0], [1.0, 5.0, 3.0])), (3,))
    assert lo.tolist() == [-1.0, 0.0, 2.0] and hi.tolist() == [1.0, 5.0, 3.0] and lo.dtype == np.float32
    assert art_clip_values(Bounds.of((float("-inf"), float("inf"))), (3,)) is None
    b = bounds_from_clip_values((np.zeros(4), np.ones(4)), (1, 2, 2))  # flat per-feature -> input shape
    assert tuple(b.lower.shape) == (1, 2, 2) and b.is_unit


# -------------------------------------------------------------------------- poisonlab attack in ART
def _art_classifier(num_classes: int = 3, clip_values=(0.0, 1.0), **kw):
    from art.estimators.classification import PyTorchClassifier

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, num_classes))
    return PyTorchClassifier(model, nn.CrossEntropyLoss(), (4,), num_classes, clip_values=clip_values,
                             device_type="cpu", **kw)


def _arrays(n: int = 60, num_classes: int = 3):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 4)).astype(np.float32), rng.integers(0, num_classes, n)


RECIPE = {"epochs": 1, "batch_size": 16, "device": "cpu"}


@needs_art
def test_poisonlab_attack_is_an_art_poisoning_attack():
    from art.attacks.attack import PoisoningAttack, PoisoningAttackWhiteBox

    from poisonlab.interop.art import PoisonlabAttack

    attack = PoisonlabAttack("label_flip", _art_classifier(), 0.1, recipe=RECIPE)
    assert isinstance(attack, PoisoningAttack) and isinstance(attack, PoisoningAttackWhiteBox)
    assert attack.estimator is not None and "fraction" in attack.attack_params
    with pytest.raises(ConfigError):
        PoisonlabAttack("no_such_attack", _art_classifier(), 0.1)
    with pytest.raises(ConfigError):
        PoisonlabAttack("label_flip", _art_classifier(), 1.5)
    with pytest.raises(UnsupportedError):
        PoisonlabAttack("label_flip", _art_classifier(preprocessing=(0.5, 2.0)), 0.1)


@needs_art
@pytest.mark.parametrize("encoding", ["index", "one-hot"])
def test_label_flip_through_art(encoding):
    from poisonlab.interop.art import PoisonlabAttack

    clf = _art_classifier(clip_values=(np.zeros(4, np.float32), np.full(4, 0.9, np.float32)))
    before = [p.detach().clone() for p in clf.model.parameters()]
    x, y_index = _arrays()
    x = np.minimum(x, 0.9)
    y = np.eye(3, dtype=np.float32)[y_index] if encoding == "one-hot" else y_index
    xp, yp = PoisonlabAttack("label_flip", clf, 0.1, recipe=RECIPE).poison(x, y)
    n = round(0.1 * round(0.7 * len(x)))  # the budget counts D_tr = 70 % of x
    assert xp.shape == (n, 4) and xp.dtype == x.dtype
    assert (xp >= 0).all() and (xp <= 0.9).all()
    if encoding == "one-hot":
        assert yp.shape == (n, 3) and yp.dtype == np.float32 and (yp.sum(1) == 1).all()
    else:
        assert yp.shape == (n,) and yp.dtype == y.dtype
    # label flip copies training points and flips y <- C - 1 - y
    labels = yp.argmax(1) if encoding == "one-hot" else yp
    rows = [int(np.flatnonzero((x == r).all(1))[0]) for r in xp]
    assert (labels == 2 - y_index[rows]).all()
    assert all(torch.equal(a, b) for a, b in zip(before, clf.model.parameters()))  # the classifier is untouched


@needs_art
def test_x_val_makes_all_of_x_the_training_set():
    from poisonlab.interop.art import PoisonlabAttack

    x, y = _arrays(50)
    xv, yv = _arrays(20)
    attack = PoisonlabAttack("label_flip", _art_classifier(), 0.1, x_val=xv, y_val=yv, recipe=RECIPE)
    xp, yp = attack.poison(x, y[:, None])
    assert xp.shape == (5, 4) and yp.shape == (5, 1)
    assert len(attack.data_.train) == 50 and len(attack.data_.val) == 20
    src = attack.poisons_.source.numpy()  # sources index x itself
    np.testing.assert_array_equal(xp, x[src])
