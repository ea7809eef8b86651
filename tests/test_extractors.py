"""Pre-trained extractors: NT-Xent against its definition, augmentations, the safetensors cache,
linear_probe / fine_tune victims (frozen vs trained), transfer adapters, feature inversion."""

import math

import pytest
import torch
from torch import nn

from poisonlab.data import load_dataset
from poisonlab.errors import ConfigError, DataError, UnknownNameError
from poisonlab.models import build_victim
from poisonlab.models.extractors import (ConvEncoder, ExtractorVictim, InputAdapter, auto_encoder_lr_scale, load_extractor,
                                         split_head)
from poisonlab.pretrain import (PretrainConfig, augment, get_extractor, invert_features, nt_xent, pretraining_images,
                                relative_error)
from poisonlab.training import TrainConfig, VictimSpec, accuracy

TINY = {"channels": [4, 8]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("POISONLAB_CACHE", str(d))
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def extractor(cache):
    cfg = PretrainConfig(dataset="digits", n_images=256, epochs=3, batch_size=64, encoder_options=TINY, seed=3)
    path, meta = get_extractor(cfg)
    return cfg, path, meta


def _nt_xent_reference(z1, z2, tau):
    """SimCLR's definition, literally: views 2k-1, 2k interleaved, loss averaged over all 2N anchors."""
    z = torch.stack([z1, z2], 1).reshape(-1, z1.shape[1])
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)

    def l(i, j):
        num = math.exp(float(z[i] @ z[j]) / tau)
        den = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n2) if k != i)
        return -math.log(num / den)

    return sum(l(2 * k, 2 * k + 1) + l(2 * k + 1, 2 * k) for k in range(n2 // 2)) / n2


def test_nt_xent_matches_definition_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    for tau in (0.1, 0.5, 2.0):
        assert nt_xent(z1, z2, tau).item() == pytest.approx(_nt_xent_reference(z1, z2, tau), rel=1e-12)
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda u, v: nt_xent(u, v, 0.5), (a, b))
    # perfectly aligned, mutually orthogonal pairs have the minimal loss among these
    e = torch.eye(4, dtype=torch.float64)
    assert nt_xent(e, e, 0.5) < nt_xent(e, e.roll(1, 0), 0.5)


def test_augment_identity_range_and_determinism():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    same = augment(x, torch.Generator().manual_seed(0), min_scale=1.0, jitter=0.0, noise=0.0)
    assert torch.allclose(same, x, atol=1e-6)
    a = augment(x, torch.Generator().manual_seed(5), flip=True)
    b = augment(x, torch.Generator().manual_seed(5), flip=True)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, x, atol=1e-3)


def test_input_adapter_channels_and_size():
    x = torch.rand(2, 1, 8, 8)
    y = InputAdapter((1, 8, 8), (3, 8, 8))(x)
    assert y.shape == (2, 3, 8, 8) and torch.equal(y[:, 0], y[:, 2]) and torch.equal(y[:, 1], x[:, 0])
    rgb = torch.rand(2, 3, 6, 6)
    grey = InputAdapter((3, 6, 6), (1, 12, 12))(rgb)
    assert grey.shape == (2, 1, 12, 12) and grey.min() >= 0 and grey.max() <= 1
    luma = InputAdapter((3, 6, 6), (1, 6, 6))(rgb)
    assert torch.allclose(luma[:, 0], 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    with pytest.raises(ConfigError):
        InputAdapter((2, 8, 8), (3, 8, 8))


def test_pretrain_learns_and_is_cached(extractor, cache):
    cfg, path, meta = extractor
    assert path.parent == cache / "extractors" and path.name == f"{cfg.key()}.safetensors"
    hist = meta["report"]["loss_history"]
    assert len(hist) == 3 and hist[-1] < hist[0]
    again_path, again = get_extractor(cfg)
    assert again_path == path and again["cached"] is True
    enc, m = load_extractor(cfg.key())  # by cache key
    assert m["input_shape"] == [1, 8, 8] and m["feature_dim"] == 8 and isinstance(enc, ConvEncoder)
    assert PretrainConfig(dataset="digits", seed=4).key() != PretrainConfig(dataset="digits", seed=3).key()
    with torch.no_grad():  # features are standardised on the pre-training images
        h = enc(pretraining_images(cfg).x)
    assert torch.allclose(h.mean(0), torch.zeros(8), atol=1e-4) and torch.allclose(h.std(0), torch.ones(8), atol=1e-3)


def test_pretrain_is_deterministic_and_supervised_option(tmp_path):
    cfg = PretrainConfig(dataset="digits", n_images=128, epochs=1, batch_size=64, encoder_options=TINY)
    a, _ = get_extractor(cfg, out=tmp_path / "a.safetensors")
    b, _ = get_extractor(cfg, out=tmp_path / "b.safetensors")
    ea, eb = load_extractor(str(a))[0], load_extractor(str(b))[0]
    assert all(torch.equal(p, q) for p, q in zip(ea.state_dict().values(), eb.state_dict().values()))
    sup = PretrainConfig(dataset="digits", method="supervised", n_images=512, epochs=15, batch_size=32, lr=0.05,
                         encoder_options=TINY)
    _, meta = get_extractor(sup, out=tmp_path / "s.safetensors")
    assert meta["method"] == "supervised" and meta["report"]["train_accuracy"] > 50.0
    with pytest.raises(ConfigError, match="method"):
        PretrainConfig(method="byol")
    with pytest.raises(ConfigError, match="unknown option"):
        PretrainConfig.from_dict({"epoch": 3})


def _train_and_compare(name, data):
    spec = VictimSpec(name, data.input_shape, 10, TrainConfig(epochs=2, batch_size=64, device="cpu"))
    init = spec.build(0)
    trained = spec.train(data, 0)
    changed = {k: not torch.equal(init.state_dict()[k], v) for k, v in trained.state_dict().items()}
    return trained, changed


def test_linear_probe_freezes_and_fine_tune_trains(extractor):
    _, path, _ = extractor
    data = load_dataset("digits").train.subset(torch.arange(300))
    probe, changed = _train_and_compare(f"linear_probe:{path}", data)
    assert isinstance(probe, ExtractorVictim) and probe.frozen
    assert changed["head.weight"] and not any(v for k, v in changed.items() if k.startswith("encoder."))
    enc, _ = load_extractor(str(path))  # the frozen part is exactly the pre-trained extractor
    assert all(torch.equal(v, probe.encoder.state_dict()[k]) for k, v in enc.state_dict().items())
    _, changed = _train_and_compare(f"fine_tune:{path}", data)
    assert changed["head.weight"] and any(v for k, v in changed.items() if k.startswith("encoder."))


def test_fine_tune_encoder_step_undoes_the_standardiser(extractor):
    """The encoder's SGD step is lr / median(feature_scale)² (head: lr); 0 trains the head only."""
    _, path, _ = extractor
    model = build_victim(f"fine_tune:{path}", (1, 8, 8), 10)
    med = float(model.encoder.feature_scale.median())
    assert med > 5  # the tiny SimCLR encoder's standardiser does inflate its features
    head, enc = model.optimizer_groups(0.1)
    assert head["lr"] == 0.1 and {id(p) for p in head["params"]} == {id(p) for p in model.head.parameters()}
    assert enc["lr"] == pytest.approx(0.1 / med**2, rel=1e-6)
    assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
    assert auto_encoder_lr_scale(ConvEncoder((1, 8, 8), (4, 8))) == 1.0  # no standardiser set: one step for all
    assert len(build_victim(f"fine_tune:{path}", (1, 8, 8), 10, encoder_lr_scale=0).optimizer_groups(0.1)) == 1
    assert len(build_victim(f"linear_probe:{path}", (1, 8, 8), 10).optimizer_groups(0.1)) == 1
    assert build_victim(f"fine_tune:{path}", (1, 8, 8), 10, encoder_lr_scale=0.5).optimizer_groups(0.2)[1]["lr"] == 0.1
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        build_victim(f"fine_tune:{path}", (1, 8, 8), 10, encoder_lr_scale=-1)
    with pytest.raises(ConfigError, match="no option"):
        build_victim(f"fine_tune:{path}", (1, 8, 8), 10, width=3)


def test_bilevel_followers_take_the_training_loops_step_per_parameter(extractor):
    """Functional followers (tgda, back_gradient, min_max, metapoison) step the encoder of a fine-tuned
    extractor by lr·encoder_lr_scale like THE training loop, not by the head's lr."""
    from poisonlab.attacks import bilevel as B

    _, path, _ = extractor
    model = build_victim(f"fine_tune:{path}", (1, 8, 8), 10, encoder_lr_scale=0.25)
    fol, w = B.Follower.from_model(model, torch.float64)
    head = {f"head.{n}" for n, _ in model.head.named_parameters()}
    assert set(fol.names) >= head and len(fol.names) > len(head)
    rates = fol.step_sizes(0.2)
    assert all(r == pytest.approx(0.2 if n in head else 0.05) for n, r in zip(fol.names, rates))
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 10
    ws = tuple(p.clone().requires_grad_(True) for p in w)
    grads = torch.autograd.grad(fol.loss(ws, x, y), ws)
    stepped = B.sgd_steps(lambda v: fol.loss(v, x, y), w, rates, 1)
    for p, g, q, r in zip(w, grads, stepped, rates):
        assert torch.allclose(q, p - r * g, atol=1e-12)
    probe, _ = B.Follower.from_model(build_victim(f"linear_probe:{path}", (1, 8, 8), 10), torch.float64)
    assert probe.step_sizes(0.1) == (0.1,) * len(probe.names)  # a frozen encoder is not in the follower
    assert set(probe.names) == head
    head_only, _ = B.Follower.from_model(build_victim(f"fine_tune:{path}", (1, 8, 8), 10, encoder_lr_scale=0), torch.float64)
    assert set(head_only.names) == head  # the loop never moves a step-0 encoder, so neither does the follower
    with pytest.raises(ValueError, match="step sizes"):
        B.sgd_steps(lambda v: fol.loss(v, x, y), w, rates[:1], 1)


def test_fine_tune_is_at_least_as_good_as_the_probe_with_the_recipe_lr(extractor):
    """At the recipe's lr 0.1, fine-tuning must not destroy the extractor: one step for encoder and
    head (the old behaviour, encoder_lr_scale=1) collapses to chance on this extractor."""
    _, path, _ = extractor
    b = load_dataset("digits")
    data = b.train.subset(torch.arange(300))
    recipe = TrainConfig(lr=0.1, epochs=30, batch_size=50, device="cpu")

    def acc(name, **opts):
        return accuracy(VictimSpec(name, (1, 8, 8), 10, recipe, opts).train(data, 0), b.test)

    probe, ft = acc(f"linear_probe:{path}"), acc(f"fine_tune:{path}")
    assert probe > 30.0 and ft >= probe - 1.0, (probe, ft)
    assert acc(f"fine_tune:{path}", encoder_lr_scale=1.0) < probe - 20.0  # the old recipe, for contrast


def test_transfer_to_other_shape_and_victim_name_errors(extractor):
    cfg, path, _ = extractor
    model = build_victim(f"linear_probe:{cfg.key()}", (3, 12, 12), 4)  # digits (1x8x8) extractor on RGB 12x12
    assert model(torch.rand(5, 3, 12, 12)).shape == (5, 4)
    feats, head = split_head(model)
    assert feats(torch.rand(2, 3, 12, 12)).shape == (2, 8) and head.out_features == 4
    with pytest.raises(ConfigError, match="takes no"):
        build_victim("lr:foo", (1, 8, 8), 10)
    with pytest.raises(UnknownNameError):
        build_victim("nope:foo", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="needs an extractor"):
        build_victim("linear_probe", (1, 8, 8), 10)
    with pytest.raises(DataError, match="pretrain"):
        build_victim("fine_tune:/no/such/file.safetensors", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="no option"):
        build_victim(f"linear_probe:{path}", (1, 8, 8), 10, width=3)


def test_split_head_of_plain_victims():
    lr = build_victim("lr", (1, 4, 4), 3)
    f, h = split_head(lr)
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(h(f(x)), lr(x))
    cnn = build_victim("cnn", (1, 8, 8), 3)
    f, h = split_head(cnn)
    assert torch.allclose(h(f(x.repeat(1, 1, 2, 2))), cnn(x.repeat(1, 1, 2, 2)))


def test_inversion_linear_map_reaches_target_and_respects_radius():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 16, generator=g, dtype=torch.float64)  # over-complete linear "extractor" on 1x4x4 images
    phi = lambda x: x.flatten(1) @ a.T  # noqa: E731
    x_star = 0.2 + 0.6 * torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    init = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64)
    x, rep = invert_features(phi, phi(x_star), init, steps=1500, lr=0.01)
    assert rep["feature_rel_error_mean"] < 1e-3 < rep["feature_rel_error_initial_mean"]
    assert torch.allclose(x, x_star, atol=1e-3)  # A has full column rank: the preimage is unique
    r = 0.05
    xr, rep_r = invert_features(phi, phi(x_star), init, source=init, radius=r, steps=300, lr=0.01)
    assert (xr - init).abs().max() <= r + 1e-12 and xr.min() >= 0 and xr.max() <= 1
    assert rep_r["feature_rel_error_mean"] < rep_r["feature_rel_error_initial_mean"]
    assert torch.allclose(relative_error(phi(xr), phi(x_star)).mean(), torch.tensor(rep_r["feature_rel_error_mean"], dtype=torch.float64))


def test_inversion_through_conv_encoder():
    torch.manual_seed(0)
    enc = ConvEncoder((1, 8, 8), channels=(4, 8)).double().eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x_star = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64)
    init = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64)
    _, rep = invert_features(enc, enc(x_star), init, steps=300, lr=0.02)
    assert rep["feature_rel_error_mean"] < 0.1 * rep["feature_rel_error_initial_mean"]


def test_resnet18_encoder_and_unknown_encoder():
    from poisonlab.models.extractors import build_encoder

    enc = build_encoder("resnet18", (3, 16, 16), {"width": 4})
    assert enc(torch.rand(2, 3, 16, 16)).shape == (2, 32) and enc.feature_dim == 32
    with pytest.raises(UnknownNameError):
        build_encoder("vit", (3, 16, 16))
    with pytest.raises(ConfigError, match="bad options"):
        build_encoder("conv", (1, 8, 8), {"depth": 3})


def test_extractor_fingerprint_follows_the_file(tmp_path):
    from poisonlab.models.extractors import extractor_fingerprint

    cfg = PretrainConfig(dataset="digits", n_images=64, epochs=0, batch_size=32, encoder_options=TINY)
    path, _ = get_extractor(cfg, out=tmp_path / "e.safetensors")
    a = extractor_fingerprint(f"linear_probe:{path}")
    assert a == extractor_fingerprint(f"fine_tune:{path}") and len(a) == 64
    get_extractor(PretrainConfig(dataset="digits", n_images=64, epochs=0, batch_size=32, encoder_options=TINY, seed=1),
                  out=path)  # another config at the same path replaces the file
    assert extractor_fingerprint(f"linear_probe:{path}") != a
    assert extractor_fingerprint("cnn") is None
