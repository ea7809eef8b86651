import pytest
import torch

from poisonlab.data import load_dataset
from poisonlab.errors import ConfigError, UnknownNameError
from poisonlab.models import GENERATORS, VICTIMS, build_generator, build_victim
from poisonlab.training import TrainConfig, VictimSpec, accuracy


# victims that need a ``:``-argument (linear_probe:<extractor>, ...) are tested in test_extractors.py
@pytest.mark.parametrize("name", [n for n in VICTIMS.names() if not getattr(VICTIMS.get(n), "takes_argument", False)])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_victims_map_images_to_logits(name, shape):
    m = build_victim(name, shape, 10, **({"width": 8} if name == "resnet18" else {}))
    out = m(torch.rand(3, *shape))
    assert out.shape == (3, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", GENERATORS.names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_generators_output_images_in_unit_range(name, shape):
    g = build_generator(name, shape, 10)
    x, y = torch.rand(4, *shape), torch.randint(0, 10, (4,))
    out = g(x, y)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # the label is an input: changing it changes the output
    assert not torch.allclose(g(x, (y + 1) % 10), out)


def test_unknown_model_and_bad_options():
    with pytest.raises(UnknownNameError, match="valid models: cnn, fine_tune, linear_probe, lr, nn, resnet18"):
        build_victim("svm", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="no option"):
        build_victim("lr", (1, 8, 8), 10, hidden=3)


@pytest.mark.parametrize("bad", [{"lr": 0}, {"epochs": -1}, {"batch_size": 0}, {"momentum": 1.0}, {"nope": 1}])
def test_train_config_validation(bad):
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(bad)


def test_training_is_deterministic_and_learns():
    b = load_dataset("digits")
    spec = VictimSpec("nn", b.train.input_shape, 10, TrainConfig(epochs=30, batch_size=64, device="cpu"), {"hidden": [32, 32]})
    m1, m2 = spec.train(b.train, seed=3), spec.train(b.train, seed=3)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    untrained = accuracy(spec.build(3), b.test)
    assert accuracy(m1, b.test) > max(80.0, untrained + 40)
    m3 = spec.train(b.train, seed=4)
    assert not torch.equal(m1.head.weight, m3.head.weight)


def test_sample_weights_zero_means_ignored():
    b = load_dataset("digits")
    spec = VictimSpec("lr", b.train.input_shape, 10, TrainConfig(epochs=2, batch_size=2000, device="cpu"))
    w = torch.ones(len(b.train))
    w[:100] = 0.0
    weighted = spec.train(b.train, seed=0, sample_weight=w)
    subset = spec.train(b.train.subset(torch.arange(100, len(b.train))), seed=0)
    # full-batch GD: weighting a point by zero == removing it
    torch.testing.assert_close(weighted.linear.weight, subset.linear.weight, rtol=1e-5, atol=1e-6)


def test_predict_logits_casts_inputs_to_the_model_dtype():
    from poisonlab.models import build_victim
    from poisonlab.training import predict_logits

    model = build_victim("lr", (1, 4, 4), 3).double()
    x = torch.rand(5, 1, 4, 4)  # float32 data, float64 model
    out = predict_logits(model, x)
    assert out.dtype == torch.float64 and out.shape == (5, 3)
    assert torch.allclose(out, model(x.double()).detach())


@pytest.mark.parametrize("batch_size,weighted", [(None, False), (7, True), (7, False)])
def test_training_gathers_batches_into_one_reused_buffer_with_the_same_result(batch_size, weighted):
    """THE loop gathers each batch into one buffer it reuses; the weights equal those of a loop that
    takes a fresh x[idx] per batch, bit for bit (full batch; 7 with a short last batch; weighted)."""
    import torch.nn.functional as F

    from poisonlab.data.types import Dataset
    from poisonlab.training.loop import make_optimizer, train

    g = torch.Generator().manual_seed(0)
    data = Dataset(torch.rand(30, 4, generator=g), torch.randint(0, 3, (30,), generator=g), 3, "tiny")
    w = torch.rand(30, generator=g) if weighted else None
    cfg = TrainConfig(epochs=3, batch_size=batch_size, lr=0.5, momentum=0.9)
    torch.manual_seed(0)
    got = train(torch.nn.Linear(4, 3), data, cfg, torch.Generator().manual_seed(1), sample_weight=w)
    torch.manual_seed(0)
    ref = torch.nn.Linear(4, 3)
    opt, _ = make_optimizer(ref, cfg)
    gen, bs = torch.Generator().manual_seed(1), batch_size or len(data)
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(data), generator=gen)
        for s in range(0, len(data), bs):
            idx = perm[s : s + bs]
            if w is None:
                loss = F.cross_entropy(ref(data.x[idx]), data.y[idx])
            else:
                per = F.cross_entropy(ref(data.x[idx]), data.y[idx], reduction="none")
                loss = (per * w[idx]).sum() / w[idx].sum().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), ref.state_dict().values()))
    assert not torch.equal(got.weight, torch.nn.Linear(4, 3).weight)  # it trained
