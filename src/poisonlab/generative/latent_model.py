"""A tiny class-conditional latent diffusion model, and textual inversion, for the effect of
disguises on generation (thesis chapter 5, Lu et al. ICML 2024, §"Disguises in training").

Threat model: the victim trains (``train_latent_model``, like LDM training) or fine-tunes
(``textual_inversion``, like Gal et al. 2023 on Stable Diffusion) a latent generative model on
images whose latents E(x) it never inspects. If those images are disguises of a copyrighted x_c,
the model learns E(x_c) and generates x_c, although x_c was never in its training set.

The model is diffusers' ``UNet2DModel`` on scaled latents s·E(x) of shape (c_z, h, w) with a DDPM
noise schedule; a *concept* (a class, or a textual-inversion token) is a learned vector in the
UNet's time-embedding space (``class_embed_type="identity"``): the concept table plays the role of
Stable Diffusion's token embeddings, and textual inversion learns one new row with the UNet frozen.
Sampling uses DDIM (η = 0) on the same schedule.

:func:`sd_textual_inversion` runs the same textual-inversion loop on a real Stable Diffusion
pipeline loaded from a local directory (needs ``transformers`` and, in practice, a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..options import config_from_dict
from ..seeding import device_generator, seeded_rng
from .metrics import ssim
from .vae import LatentAutoencoder, require_diffusers

#: A noise predictor ε(z_t, t, cond) → ε̂: a denoiser's forward (the tiny latent model's or Stable
#: Diffusion's UNet with its text conditioning).
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class LatentDiffusionConfig:
    """Denoiser architecture and noise schedule."""

    block_out_channels: tuple[int, ...] = (64, 128)
    layers_per_block: int = 1
    norm_num_groups: int = 16
    num_train_timesteps: int = 200
    beta_schedule: str = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        if not self.block_out_channels or any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError("block_out_channels must be multiples of norm_num_groups")
        if self.num_train_timesteps < 2:
            raise ConfigError("num_train_timesteps must be >= 2")
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            raise ConfigError(f"unknown beta_schedule {self.beta_schedule!r}")


@dataclass(frozen=True, kw_only=True)
class LatentTrainConfig:
    """Adam on the ε-prediction loss; ``steps`` mini-batches of ``batch_size`` latents."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 0):
            raise ConfigError(f"steps must be an integer >= 0, got {self.steps!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LatentTrainConfig":
        return config_from_dict(cls, d, "latent model training recipe")


class ConditionalLatentDiffusion(nn.Module):
    #: diffusers modules (typed ``Any``: their call signatures and ``config`` are dynamic)
    unet: Any
    scheduler: Any

    """ε-prediction DDPM on scaled latents (N, c_z, h, w), conditioned on concept vectors (N, d)."""

    def __init__(self, latent_shape: tuple[int, int, int], num_concepts: int, config: LatentDiffusionConfig | None = None, *,
                 seed: int = 0) -> None:
        super().__init__()
        require_diffusers()
        from diffusers import DDPMScheduler, UNet2DModel

        cfg = config or LatentDiffusionConfig()
        c, h, w = latent_shape
        n = len(cfg.block_out_channels)
        self.latent_shape = (int(c), int(h), int(w))
        with seeded_rng(seed):
            self.unet = UNet2DModel(
                sample_size=h,
                in_channels=c,
                out_channels=c,
                block_out_channels=tuple(cfg.block_out_channels),
                layers_per_block=cfg.layers_per_block,
                down_block_types=("DownBlock2D",) * n,
                up_block_types=("UpBlock2D",) * n,
                norm_num_groups=cfg.norm_num_groups,
                class_embed_type="identity",
            )
            self.embed_dim = 4 * cfg.block_out_channels[0]
            self.concepts = nn.Embedding(num_concepts, self.embed_dim)
            nn.init.normal_(self.concepts.weight, std=1.0)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, clip_sample=False
        )

    @property
    def device(self) -> torch.device:
        """Where the UNet and the concept table live."""
        return self.concepts.weight.device

    @property
    def num_concepts(self) -> int:
        return int(self.concepts.num_embeddings)

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise (N, c_z, h, w) for noisy latents z_t, timesteps t (N,), concept vectors (N, d)."""
        return self.unet(z_t, t, class_labels=cond).sample

    def loss(self, z0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean ε-prediction error at uniformly drawn timesteps (the LDM / textual-inversion loss);
        ``generator`` must live on ``z0``'s device (:func:`diffusion_loss`)."""
        return diffusion_loss(self.eps, self.scheduler, z0, cond, generator)

    def add_concept(self, vector: torch.Tensor) -> int:
        """Append a concept row (a new 'token'); returns its index."""
        old = self.concepts.weight.data
        table = nn.Embedding(old.shape[0] + 1, old.shape[1]).to(old)
        table.weight.data[:-1] = old
        table.weight.data[-1] = vector.detach().to(old)
        table.weight.requires_grad_(self.concepts.weight.requires_grad)
        self.concepts = table
        return old.shape[0]

    @torch.no_grad()
    def sample(self, concept: int | torch.Tensor, n: int, generator: torch.Generator, steps: int = 50) -> torch.Tensor:
        """n scaled latents (n, c_z, h, w) of ``concept`` (an index or a vector (d,)) by DDIM, η = 0,
        on the model's device (the start noise is drawn there, from ``generator``'s stream)."""
        from diffusers import DDIMScheduler

        dev = self.device
        vec = self.concepts.weight[concept] if isinstance(concept, int) else concept.to(dev)
        cond = vec.detach().reshape(1, -1).expand(n, -1)
        sched = DDIMScheduler.from_config(self.scheduler.config)
        sched.set_timesteps(min(steps, self.scheduler.config.num_train_timesteps))
        g = device_generator(generator, dev)
        z = torch.randn(n, *self.latent_shape, generator=g, dtype=vec.dtype, device=g.device).to(dev)  # no-op unless meta
        ts = sched.timesteps.to(dev)  # the UNet's timesteps, uploaded once; the scheduler keeps its own
        for i, t in enumerate(sched.timesteps):
            z = sched.step(self.eps(z, ts[i].expand(n), cond), t, z).prev_sample
        return z


def diffusion_loss(
    eps_fn: EpsFn,
    scheduler: Any,
    z0: torch.Tensor,
    cond: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """‖ε − ε_θ(√ᾱ_t z0 + √(1−ᾱ_t) ε, t, cond)‖² averaged; shared by the tiny model and Stable Diffusion.
    Timesteps and noise are drawn on ``generator``'s device, which should be ``z0``'s
    (:func:`~poisonlab.seeding.device_generator`; otherwise they are copied over every call)."""
    n = z0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator, device=generator.device)
    noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype, device=generator.device)
    t, noise = t.to(z0.device), noise.to(z0.device)
    z_t = scheduler.add_noise(z0, noise, t)
    return F.mse_loss(eps_fn(z_t, t, cond), noise)


def adam_on_batches(
    params: Iterable[torch.Tensor],
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    config: LatentTrainConfig,
    generator: torch.Generator,
    *,
    desc: str,
    progress: bool = False,
) -> list[float]:
    """THE loop of latent-model training and textual inversion: ``config.steps`` Adam steps (lr
    ``config.lr``) on ``params``, each on ``batch_loss(idx)`` for ``config.batch_size`` indices
    drawn from ``range(n)`` with ``generator`` (on its device: give a generator on the data's
    device). Returns the loss every step; the losses reach the host every 50 steps (the bar shows
    their mean), not every step."""
    opt = torch.optim.Adam(params, lr=config.lr)
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    bar = tqdm(total=config.steps, desc=desc, disable=not progress, unit="step")
    for step in range(config.steps):
        idx = torch.randint(0, n, (min(config.batch_size, n),), generator=generator, device=generator.device)
        loss = batch_loss(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pending.append(loss.detach())
        if len(pending) == 50 or step == config.steps - 1:
            losses += torch.stack(pending).cpu().tolist()
            pending.clear()
            bar.update(len(losses) - bar.n)
            if len(losses) >= 50:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
    bar.close()
    return losses


def train_latent_model(
    model: ConditionalLatentDiffusion,
    z: torch.Tensor,
    concept: torch.Tensor,
    config: LatentTrainConfig,
    generator: torch.Generator,
    *,
    progress: bool = False,
) -> list[float]:
    """Train UNet and concept table from scratch-or-on on scaled latents z (N, c_z, h, w) with
    concept ids (N,) (LDM training). Returns the loss every step."""
    if z.ndim != 4 or z.shape[1:] != model.latent_shape or concept.shape != (z.shape[0],):
        raise DataError(f"latents must be (N, {model.latent_shape}) with N concept ids, got {tuple(z.shape)}, {tuple(concept.shape)}")
    model.requires_grad_(True).train()
    dev = model.device
    z, concept = z.to(dev), concept.to(dev)  # once; batches, timesteps and noise are drawn there
    g = device_generator(generator, dev)
    losses = adam_on_batches(model.parameters(), lambda idx: model.loss(z[idx], model.concepts(concept[idx]), g),
                             len(z), config, g, desc="train latent model", progress=progress)
    model.requires_grad_(False).eval()
    return losses


def invert_concept(
    eps_fn: EpsFn,
    scheduler: Any,
    z: torch.Tensor,
    init: torch.Tensor,
    config: LatentTrainConfig,
    generator: torch.Generator,
    *,
    expand: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Textual inversion (Gal et al. 2023): learn one conditioning vector v, everything else frozen,
    minimising the diffusion loss on latents z. ``expand(v, n)`` turns v into the model's
    conditioning for a batch of n (default: ``v`` repeated n times). Returns (v, losses).
    Runs on ``init``'s device (the model's): ``z`` is moved there once."""
    v = init.detach().clone().requires_grad_(True)
    z = z.to(v.device)
    g = device_generator(generator, v.device)
    expand = expand or (lambda vec, n: vec.reshape(1, -1).expand(n, -1))
    losses = adam_on_batches([v], lambda idx: diffusion_loss(eps_fn, scheduler, z[idx], expand(v, len(idx)), g),
                             len(z), config, g, desc="textual inversion", progress=progress)
    return v.detach(), losses


def textual_inversion(
    model: ConditionalLatentDiffusion,
    z: torch.Tensor,
    config: LatentTrainConfig,
    generator: torch.Generator,
    *,
    init_concept: int | None = None,
    progress: bool = False,
) -> tuple[int, list[float]]:
    """Add a concept learned from scaled latents z (the fine-tuning set) with the model frozen;
    returns (new concept index, losses). Starts from ``init_concept``'s vector (or the mean)."""
    model.requires_grad_(False).eval()
    w = model.concepts.weight
    init = w[init_concept] if init_concept is not None else w.mean(0)
    v, losses = invert_concept(model.eps, model.scheduler, z, init, config, generator, progress=progress)
    return model.add_concept(v), losses


@torch.no_grad()
def encode_scaled(vae: LatentAutoencoder, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """s·E(x), the latents the latent model trains on (N, c_z, h, w), on the VAE's device."""
    return torch.cat([vae.encode(x[i : i + batch].to(vae.device, vae.dtype)) for i in range(0, len(x), batch)]) * vae.scaling_factor


@torch.no_grad()
def reproduction_metrics(vae: LatentAutoencoder, z_gen: torch.Tensor, x_c: torch.Tensor) -> dict[str, float]:
    """How much generated scaled latents z_gen (n, ...) reproduce the copyrighted image x_c (1, C, H, W):
    mean / max SSIM of D(z/s) to x_c, and min / mean relative latent distance ‖z/s − E(x_c)‖ / ‖E(x_c)‖."""
    x_c = x_c.to(vae.device, vae.dtype)
    zc = vae.encode(x_c)
    imgs = vae.decode(z_gen.to(vae.device) / vae.scaling_factor, channels=x_c.shape[1])
    s = ssim(imgs, x_c.expand_as(imgs).to(imgs.dtype))
    d = (z_gen.to(vae.device) / vae.scaling_factor - zc).flatten(1).norm(dim=1) / zc.flatten().norm().clamp_min(1e-12)
    return {"ssim_mean": float(s.mean()), "ssim_max": float(s.max()),
            "latent_dist_min": float(d.min()), "latent_dist_mean": float(d.mean())}


# ------------------------------------------------------------------------- Stable Diffusion
def sd_textual_inversion(
    pipeline_dir: str | Path,
    images: torch.Tensor,
    *,
    placeholder: str = "<disguised>",
    initializer: str = "painting",
    prompt: str = "a photo of {}",
    config: LatentTrainConfig | None = None,
    generator: torch.Generator | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
):
    """Textual inversion of a local Stable Diffusion pipeline on ``images`` (N, 3, H, W) in [0, 1]
    (e.g. disguises at the pipeline's resolution). Returns (pipeline with the learned token, losses);
    generate with ``pipe(prompt.format(placeholder))``. Same loss and loop as :func:`textual_inversion`
    (:func:`invert_concept`); only the conditioning differs: the CLIP text encoder's output for the
    prompt, with the placeholder token's input embedding replaced by the learned vector.
    ``device``: "auto" (default; CUDA when available), "cpu", "cuda:N", ...; checked first
    (:func:`poisonlab.training.resolve_device`)."""
    from ..training import resolve_device

    device = resolve_device(device)
    require_diffusers()
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("Stable Diffusion textual inversion needs transformers: pip install transformers") from None
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from .vae import LatentAutoencoder

    cfg = config or LatentTrainConfig(steps=1000, batch_size=4, lr=5e-3)
    gen = generator or torch.Generator().manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(str(pipeline_dir), local_files_only=True, safety_checker=None)
    pipe = pipe.to(device)
    tok, text, unet = pipe.tokenizer, pipe.text_encoder, pipe.unet
    for m in (pipe.vae, text, unet):
        m.requires_grad_(False)
    if tok.add_tokens(placeholder) != 1:
        raise ConfigError(f"token {placeholder!r} already exists in the tokenizer")
    text.resize_token_embeddings(len(tok))
    new_id = tok.convert_tokens_to_ids(placeholder)
    init_ids = tok.encode(initializer, add_special_tokens=False)
    table = text.get_input_embeddings().weight
    init = table[init_ids[0]].detach().clone()
    ids = tok(prompt.format(placeholder), padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids.to(device)
    vae = LatentAutoencoder(pipe.vae, source=str(pipeline_dir))
    with torch.no_grad():
        z = torch.cat([vae.encode(images[i : i + 4].to(device, vae.dtype)) for i in range(0, len(images), 4)]) * vae.scaling_factor
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    embed = text.get_input_embeddings()
    swap = _TokenSwap(embed, new_id)
    text.set_input_embeddings(swap)  # the learned vector enters through the model's own forward

    def expand(v: torch.Tensor, n: int) -> torch.Tensor:
        swap.vector = v
        return text(ids)[0].expand(n, -1, -1)

    def eps_fn(z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return unet(z_t, t, encoder_hidden_states=cond).sample

    try:
        v, losses = invert_concept(eps_fn, scheduler, z, init.to(device), cfg, gen, expand=expand, progress=progress)
    finally:
        text.set_input_embeddings(embed)
    with torch.no_grad():
        table[new_id] = v.to(table.dtype)
    return pipe, losses


class _TokenSwap(nn.Module):
    """A token-embedding layer whose row ``token_id`` is replaced by ``vector`` (differentiably):
    works with any text encoder that looks its tokens up through ``get_input_embeddings()``."""

    def __init__(self, embed: nn.Embedding, token_id: int) -> None:
        super().__init__()
        self.embed = embed
        self.token_id = int(token_id)
        self.vector: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        return self.embed.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.embed(input_ids)
        if self.vector is None:
            return out
        return torch.where((input_ids == self.token_id)[..., None], self.vector.to(out.dtype), out)
