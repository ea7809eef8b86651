"""Crafting disguises against a latent autoencoder (thesis chapter 5, Lu et al. ICML 2024, Alg. 1).

Threat model: the adversary knows the latent diffusion model's encoder E (public for Stable
Diffusion) and wants a model trained on its images to reproduce a copyrighted image x_c without
x_c (or anything that looks like it) being in the training set. Starting from an innocuous base
image x_b, it optimises the disguise x_d = x_b + δ, pixels in [0, 1]:

    min_δ  ‖s·(E(x_d) − E(x_c))‖²_mean / α  +  w_ssim·(1 − MS-SSIM(x_d, x_b))  +  w_l1·‖x_d − x_b‖_1,mean
           [ + w_evade·((1 − MS-SSIM(D(E(x_d)), x_d)) + ‖D(E(x_d)) − x_d‖_1,mean) ]      (detection-evasive)

with E the encoder's posterior mode, s the VAE's latent scaling factor (so α means the same for
any VAE), and D the decoder. Variants (:data:`VARIANTS`):

- ``unbounded``: only the pixel box [0, 1]; the perceptual terms keep x_d close to x_b;
- ``bounded``: additionally ‖δ‖_∞ ≤ ``radius``;
- ``flip``: robust to horizontal flips (common training augmentation): the latent term is averaged
  over x_d -> E(x_c) and flip(x_d) -> E(flip(x_c));
- ``evasive``: also makes the reveal D(E(x_d)) match x_d, against encoder-decoder examination.

Shapes: x_b, x_c: (N, C, H, W) in [0, 1], one copyrighted image per base (broadcast a single x_c
with ``expand``). The N problems are independent (the loss is a sum of per-image terms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.bounds import Bounds
from ..errors import ConfigError, DataError
from ..options import config_from_dict, config_to_dict
from ..registry import Registry
from ..seeding import torch_generator
from ..validation import check_int, check_number
from .metrics import fit_scales, lpips_style, ms_ssim, ssim
from .vae import LatentCodec

#: the prefix of the disguise options' error messages
_OPTIONS = "disguise options"


@dataclass(frozen=True, kw_only=True)
class DisguiseConfig:
    """Options of :func:`craft_disguises` (see the module docstring for the objective).

    Attributes:
        alpha: Divisor of the latent term (smaller: match E(x_c) harder, at the cost of closeness
            to the base). Default 0.3.
        ssim_weight: Weight of 1 − MS-SSIM(x_d, x_b). Default 1.0.
        l1_weight: Weight of the mean |x_d − x_b|. Default 1.0.
        radius: L∞ bound on x_d − x_b (pixel scale 0-1); null: only the pixel box. Default null.
        flip_robust: Average the latent term over x_d and its horizontal flip. Default false.
        evasive_weight: Weight of the detection-evasive term (the reveal D(E(x_d)) should match
            x_d); 0 turns it off. Default 0.0.
        steps: Adam steps (an integer >= 0). Default 400.
        lr: Adam's learning rate, in pixel units. Default 0.01.
        ms_ssim_scales: MS-SSIM scales, 1..5 (fewer when the images are small). Default 3.
        init_noise: Start from x_b + U(−init_noise, init_noise) per pixel (projected onto the pixel
            box and the radius), drawn from :func:`craft_disguises`' ``generator``, instead of from
            x_b itself; the only random part of the crafting. 0: start at x_b (deterministic).
            Default 0.0.
    """

    alpha: float = 0.3
    ssim_weight: float = 1.0
    l1_weight: float = 1.0
    radius: float | None = None
    flip_robust: bool = False
    evasive_weight: float = 0.0
    steps: int = 400
    lr: float = 0.01
    ms_ssim_scales: int = 3
    init_noise: float = 0.0

    def __post_init__(self) -> None:
        check_number(self.alpha, "alpha", _OPTIONS)
        for name in ("ssim_weight", "l1_weight", "evasive_weight"):
            check_number(getattr(self, name), name, _OPTIONS, allow_zero=True)
        if self.radius is not None:  # pixel scale: at most the whole [0, 1] box
            check_number(self.radius, "radius", _OPTIONS, maximum=1.0)
        check_int(self.steps, "steps", _OPTIONS, minimum=0)
        check_number(self.lr, "lr", _OPTIONS)
        check_int(self.ms_ssim_scales, "ms_ssim_scales", _OPTIONS, maximum=5)
        check_number(self.init_noise, "init_noise", _OPTIONS, allow_zero=True, maximum=1.0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DisguiseConfig":
        return config_from_dict(cls, d, _OPTIONS)


#: the pixel box the disguises live in (the VAE's inputs); projected with THE L∞ ∩ box projection
_PIXELS = Bounds.unit()

VARIANTS: Registry[DisguiseConfig] = Registry("disguise variant")
VARIANTS.add("unbounded", DisguiseConfig())
VARIANTS.add("bounded", DisguiseConfig(radius=32 / 255))
VARIANTS.add("flip", DisguiseConfig(flip_robust=True))
VARIANTS.add("evasive", DisguiseConfig(evasive_weight=1.0))


def variant_config(name: str, **overrides: Any) -> DisguiseConfig:
    """The preset ``name`` with some options replaced (unknown options raise :class:`ConfigError`)."""
    base = VARIANTS.get(name)
    if not overrides:
        return base
    return config_from_dict(DisguiseConfig, {**config_to_dict(base), **overrides}, _OPTIONS)


@dataclass
class DisguiseResult:
    """Disguises x_d (N, C, H, W), their reveals D(E(x_d)), per-image metrics (N,) and the loss history."""

    disguise: torch.Tensor
    reveal: torch.Tensor
    metrics: dict[str, torch.Tensor]
    history: list[float] = field(default_factory=list)


def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def _latent_term(vae: LatentCodec, x: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    s = vae.scaling_factor
    return (s * (vae.encode(x) - z_target)).pow(2).flatten(1).mean(1)


def disguise_loss(
    vae: LatentCodec,
    x_d: torch.Tensor,
    x_b: torch.Tensor,
    z_c: torch.Tensor,
    config: DisguiseConfig,
    z_c_flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image objective (N,) of the module docstring; ``z_c = E(x_c)``, ``z_c_flip = E(flip(x_c))``."""
    scales = min(config.ms_ssim_scales, fit_scales(x_d.shape[-2:]))
    lat = _latent_term(vae, x_d, z_c)
    if config.flip_robust:
        if z_c_flip is None:
            raise ConfigError("flip-robust disguises need E(flip(x_c))")
        lat = 0.5 * (lat + _latent_term(vae, _hflip(x_d), z_c_flip))
    loss = lat / config.alpha
    if config.ssim_weight:
        loss = loss + config.ssim_weight * (1.0 - ms_ssim(x_d, x_b, scales=scales))
    if config.l1_weight:
        loss = loss + config.l1_weight * (x_d - x_b).abs().flatten(1).mean(1)
    if config.evasive_weight:
        rec = vae.reveal(x_d)
        evade = (1.0 - ms_ssim(rec, x_d, scales=scales)) + (rec - x_d).abs().flatten(1).mean(1)
        loss = loss + config.evasive_weight * evade
    return loss


def _check_images(x_b: torch.Tensor, x_c: torch.Tensor) -> None:
    if x_b.ndim != 4 or x_b.shape != x_c.shape:
        raise DataError(f"base and copyrighted images must both be (N, C, H, W) of one shape, "
                        f"got {tuple(x_b.shape)} and {tuple(x_c.shape)}")
    for name, t in (("base", x_b), ("copyrighted", x_c)):
        if not t.is_floating_point() or t.min() < 0 or t.max() > 1:
            raise DataError(f"{name} images must be floats in [0, 1]")


def craft_disguises(
    vae: LatentCodec,
    x_b: torch.Tensor,
    x_c: torch.Tensor,
    config: DisguiseConfig | None = None,
    *,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> DisguiseResult:
    """Optimise x_d with Adam from x_b (or, with ``init_noise``, from x_b plus uniform noise drawn
    from ``generator``, default seed 0), projecting onto the pixel box (and the L∞ ball of
    ``radius`` around x_b) after every step; returns the disguises, reveals and metrics.

    The best iterate per image (lowest objective, x_b itself included) is kept, so more steps never
    make a disguise worse; ``history[t]`` is the summed objective of the best iterates after step t
    (``history[0]``: before any step). Each iterate's objective is the one its gradient step
    computes (one objective evaluation per step, plus one for the last iterate). Inputs are not
    modified.
    """
    cfg = config or DisguiseConfig()
    _check_images(x_b, x_c)
    x_b = x_b.detach().to(vae.device, vae.dtype)
    x_c = x_c.detach().to(vae.device, vae.dtype)
    with torch.no_grad():
        z_c = vae.encode(x_c)
        z_c_flip = vae.encode(_hflip(x_c)) if cfg.flip_robust else None
        best = x_b.clone()
        best_loss = disguise_loss(vae, x_b, x_b, z_c, cfg, z_c_flip)

        def keep(x: torch.Tensor, cur: torch.Tensor) -> None:
            nonlocal best_loss
            better = cur < best_loss
            best[better] = x[better]
            best_loss = torch.where(better, cur, best_loss)

        start = x_b
        if cfg.init_noise:
            g = generator if generator is not None else torch_generator(0, "disguise/init")
            noise = torch.rand(x_b.shape, generator=g, dtype=x_b.dtype, device=g.device).to(x_b.device) * 2 - 1  # once
            start = _PIXELS.project_linf(x_b + cfg.init_noise * noise, x_b, cfg.radius)
            keep(start, disguise_loss(vae, start, x_b, z_c, cfg, z_c_flip))
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    history = [float(best_loss.sum())]
    bar = tqdm(range(cfg.steps), desc="craft disguises", disable=not progress, unit="step")
    for step in bar:
        loss = disguise_loss(vae, x, x_b, z_c, cfg, z_c_flip)
        if step:  # x is the iterate after step `step` (the start was scored above)
            with torch.no_grad():
                keep(x, loss.detach())
            history.append(float(best_loss.sum()))
            bar.set_postfix(loss=f"{history[-1]:.4f}")
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            x.copy_(_PIXELS.project_linf(x, x_b, cfg.radius))
    if cfg.steps:
        with torch.no_grad():
            keep(x, disguise_loss(vae, x, x_b, z_c, cfg, z_c_flip))
        history.append(float(best_loss.sum()))
    with torch.no_grad():
        reveal = vae.reveal(best)
        metrics = disguise_metrics(vae, best, x_b, x_c, reveal=reveal)
    return DisguiseResult(best.detach(), reveal, metrics, history)


@torch.no_grad()
def disguise_metrics(
    vae: LatentCodec, x_d: torch.Tensor, x_b: torch.Tensor, x_c: torch.Tensor, *, reveal: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Per-image metrics (N,), the numbers of the thesis' disguise tables:

    - ``latent_dist`` ‖E(x_d) − E(x_c)‖ / ‖E(x_c)‖ (and ``latent_dist_base`` for x_b, the start;
      ``latent_dist_rel`` = ‖E(x_d) − E(x_c)‖ / ‖E(x_b) − E(x_c)‖, the fraction of the way still to go;
      ``latent_dist_flip`` for flip(x_d) against flip(x_c));
    - closeness to the base: ``ssim_base``, ``ms_ssim_base``, ``lpips_base`` (LPIPS-style,
      random features), ``linf_base``, ``l1_base``;
    - ``ssim_copyright`` SSIM(x_d, x_c): the disguise should *not* look like x_c;
    - reveal: ``reveal_ssim_copyright`` SSIM(D(E(x_d)), x_c), ``reveal_lpips_copyright``, against
      the VAE's own ceiling ``recon_ssim_copyright`` SSIM(D(E(x_c)), x_c);
    - ``reveal_ssim_self`` SSIM(D(E(x_d)), x_d): what encoder-decoder examination looks at.
    """
    x_d, x_b, x_c = (t.to(vae.dtype) for t in (x_d, x_b, x_c))
    if reveal is None:
        reveal = vae.reveal(x_d)
    z_d, z_b, z_c = vae.encode(x_d), vae.encode(x_b), vae.encode(x_c)
    norm_c = z_c.flatten(1).norm(dim=1).clamp_min(1e-12)
    z_df, z_cf = vae.encode(_hflip(x_d)), vae.encode(_hflip(x_c))
    recon_c = vae.reveal(x_c)
    return {
        "latent_dist": (z_d - z_c).flatten(1).norm(dim=1) / norm_c,
        "latent_dist_base": (z_b - z_c).flatten(1).norm(dim=1) / norm_c,
        "latent_dist_rel": (z_d - z_c).flatten(1).norm(dim=1) / (z_b - z_c).flatten(1).norm(dim=1).clamp_min(1e-12),
        "latent_dist_flip": (z_df - z_cf).flatten(1).norm(dim=1) / z_cf.flatten(1).norm(dim=1).clamp_min(1e-12),
        "ssim_base": ssim(x_d, x_b),
        "ms_ssim_base": ms_ssim(x_d, x_b, scales=fit_scales(x_d.shape[-2:])),
        "lpips_base": lpips_style(x_d, x_b),
        "linf_base": (x_d - x_b).abs().flatten(1).amax(1),
        "l1_base": (x_d - x_b).abs().flatten(1).mean(1),
        "ssim_copyright": ssim(x_d, x_c),
        "reveal_ssim_copyright": ssim(reveal, x_c),
        "reveal_lpips_copyright": lpips_style(reveal, x_c),
        "recon_ssim_copyright": ssim(recon_c, x_c),
        "reveal_ssim_self": ssim(reveal, x_d),
    }


def summarize(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean of every per-image metric (JSON-ready floats)."""
    return {k: float(v.double().mean()) for k, v in metrics.items()}
