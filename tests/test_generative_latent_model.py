"""Tiny class-conditional latent diffusion model and textual inversion: known-answer checks on
constant latents (the model must learn which concept means which latent)."""

import pytest
import torch

pytest.importorskip("diffusers")

from poisonlab.errors import ConfigError, DataError  # noqa: E402
from poisonlab.generative.latent_model import (  # noqa: E402
    ConditionalLatentDiffusion,
    LatentDiffusionConfig,
    LatentTrainConfig,
    diffusion_loss,
    reproduction_metrics,
    textual_inversion,
    train_latent_model,
)
from poisonlab.generative.vae import TinyVAEConfig, build_tiny_vae  # noqa: E402

TINY = LatentDiffusionConfig(block_out_channels=(16, 32), norm_num_groups=8, num_train_timesteps=50)
SHAPE = (2, 4, 4)


@pytest.fixture(scope="module")
def trained():
    """Concept 0 -> latents all +1, concept 1 -> latents all -1 (plus small jitter)."""
    g = torch.Generator().manual_seed(0)
    n = 64
    z = torch.cat([torch.ones(n, *SHAPE), -torch.ones(n, *SHAPE)]) + 0.05 * torch.randn(2 * n, *SHAPE, generator=g)
    c = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    model = ConditionalLatentDiffusion(SHAPE, 2, TINY, seed=0)
    losses = train_latent_model(model, z, c, LatentTrainConfig(steps=200, batch_size=32, lr=5e-3), torch.Generator().manual_seed(1))
    return model, losses


def test_training_learns_each_concept(trained):
    model, losses = trained
    assert sum(losses[-30:]) / 30 < 0.5 * sum(losses[:30]) / 30
    g = torch.Generator().manual_seed(2)
    pos, neg = model.sample(0, 8, g, steps=20), model.sample(1, 8, g, steps=20)
    assert pos.shape == (8, *SHAPE)
    assert pos.mean().item() > 0.6 and neg.mean().item() < -0.6, (pos.mean(), neg.mean())


def test_textual_inversion_learns_new_concept_with_model_frozen(trained):
    model, _ = trained
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    old_rows = model.concepts.weight.detach().clone()
    z = -torch.ones(16, *SHAPE)  # the fine-tuning set: what concept 1 generates
    idx, losses = textual_inversion(model, z, LatentTrainConfig(steps=80, batch_size=16, lr=0.1), torch.Generator().manual_seed(3), init_concept=0)
    assert idx == 2 and model.num_concepts == 3
    assert all(torch.equal(before[k], v) for k, v in model.unet.state_dict().items())  # UNet frozen
    assert torch.equal(model.concepts.weight[:2], old_rows)  # old concepts untouched
    assert sum(losses[-10:]) < sum(losses[:10])
    s = model.sample(idx, 8, torch.Generator().manual_seed(4), steps=20)
    assert s.mean().item() < -0.3, s.mean()  # started from concept 0 (+1), learned to produce -1


def test_diffusion_loss_is_noise_mse():
    """With ε_θ ≡ 0 the loss is the mean square of the drawn noise: replay the generator."""
    model = ConditionalLatentDiffusion(SHAPE, 1, TINY, seed=0)
    z0 = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(5))
    loss = diffusion_loss(lambda z, t, c: torch.zeros_like(z), model.scheduler, z0, torch.zeros(5, 1), torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    torch.randint(0, 50, (5,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)


def test_reproduction_metrics_and_validation():
    vae = build_tiny_vae(TinyVAEConfig(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=2, mid_block_add_attention=False))
    x_c = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = vae.encode(x_c) * vae.scaling_factor
    m = reproduction_metrics(vae, z.expand(3, -1, -1, -1), x_c)
    assert m["latent_dist_min"] == pytest.approx(0.0, abs=1e-6)
    assert m["ssim_mean"] == pytest.approx(float(__import__("poisonlab.generative.metrics", fromlist=["ssim"]).ssim(vae.reveal(x_c), x_c)), abs=1e-5)
    model = ConditionalLatentDiffusion(SHAPE, 2, TINY)
    with pytest.raises(DataError):
        train_latent_model(model, torch.zeros(4, 3, 4, 4), torch.zeros(4, dtype=torch.long), LatentTrainConfig(steps=1), torch.Generator())
    with pytest.raises(ConfigError):
        LatentTrainConfig.from_dict({"steps": 1, "epochs": 2})
