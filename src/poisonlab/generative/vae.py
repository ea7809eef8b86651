"""Latent autoencoders for latent diffusion: a diffusers ``AutoencoderKL`` behind one small wrapper.

Thesis chapter 5 / Rombach et al. 2022 (latent diffusion). The wrapper fixes the conventions the
rest of :mod:`poisonlab.generative` relies on:

- images are float tensors in [0, 1] of shape (N, C, H, W) (mapped to [-1, 1] for the VAE);
- ``encode(x)`` is the *posterior mode* E(x): (N, c_z, H/f, W/f), unscaled;
- ``decode(z)`` is D(z) clamped back to [0, 1]; ``reveal(x) = D(E(x))``.

Two sources: :func:`load_vae` reads a real Stable Diffusion VAE (or any diffusers AutoencoderKL)
from a *local* directory (``<dir>/config.json`` or ``<dir>/vae/config.json``); :func:`tiny_vae`
trains a small AutoencoderKL here (a few minutes on one CPU thread) on a real dataset and caches it
as safetensors under ``<cache root>/vae`` (:func:`poisonlab.paths.vae_dir`). Two presets
(:data:`VAE_PRESETS`): ``small`` (32x32 -> 4x8x8, f = 4, 12x compression) and ``sd``, shaped like
Stable Diffusion's VAE (f = 8, 4 latent channels: 32x32 -> 4x4x4, 48x compression).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from ..errors import ConfigError, DataError, PoisonlabError
from ..options import config_from_dict, config_to_dict
from ..paths import vae_dir
from ..registry import Registry
from ..seeding import device_generator, seeded_rng, torch_generator
from ..storage import atomic_dir
from ..training.epochs import shuffled_epochs

if TYPE_CHECKING:
    from .taef2 import TAEF2Autoencoder


class MissingDependencyError(PoisonlabError):
    """An optional dependency (here ``diffusers``) is not installed."""


def require_diffusers():
    """Import ``diffusers`` or raise a user error naming the extra to install."""
    try:
        import diffusers  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "poisonlab.generative needs diffusers: pip install 'poisonlab[diffusion]'"
        ) from None
    return diffusers


@dataclass(frozen=True, kw_only=True)
class TinyVAEConfig:
    """Architecture of the small AutoencoderKL (diffusers blocks; downsampling 2**(len(channels)-1))."""

    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    sample_size: int = 32
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ConfigError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        if not self.block_out_channels or any(c <= 0 or c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(
                f"block_out_channels {self.block_out_channels} must be positive multiples of norm_num_groups={self.norm_num_groups}"
            )
        if self.latent_channels <= 0 or self.layers_per_block <= 0 or self.sample_size <= 0:
            raise ConfigError("latent_channels, layers_per_block and sample_size must be positive")

    @property
    def downsampling(self) -> int:
        """Spatial downsampling factor f (each of the first len(channels) - 1 blocks halves H and W)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def compression_ratio(self) -> float:
        """Input numbers per latent number, C·f² / c_z (Stable Diffusion's VAE: 3·8² / 4 = 48)."""
        return self.in_channels * self.downsampling**2 / self.latent_channels


@dataclass(frozen=True, kw_only=True)
class VAETrainConfig:
    """Recipe for :func:`train_vae`: Adam on L1 + mse_weight·MSE reconstruction + kl_weight·KL."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-4
    mse_weight: float = 1.0
    num_images: int = 2500

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 0):
            raise ConfigError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size > 0):
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if self.kl_weight < 0 or self.mse_weight < 0:
            raise ConfigError("kl_weight and mse_weight must be >= 0")
        if not (isinstance(self.num_images, int) and self.num_images > 0):
            raise ConfigError(f"num_images must be a positive integer, got {self.num_images!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAETrainConfig":
        return config_from_dict(cls, d, "VAE training recipe")


class LatentCodec(Protocol):
    """What the disguise and detector code uses of a latent autoencoder ([0, 1] images (N, C, H, W)
    <-> raw latents): :class:`LatentAutoencoder` and :class:`~poisonlab.generative.taef2.TAEF2Autoencoder`."""

    source: str

    @property
    def in_channels(self) -> int: ...
    @property
    def scaling_factor(self) -> float: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def device(self) -> torch.device: ...
    def encode(self, x: torch.Tensor) -> torch.Tensor: ...
    def decode(self, z: torch.Tensor, channels: int | None = None) -> torch.Tensor: ...
    def reveal(self, x: torch.Tensor) -> torch.Tensor: ...
    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]: ...


class LatentAutoencoder(nn.Module):
    """[0, 1] images <-> latents through a diffusers ``AutoencoderKL`` ``vae``.

    ``source`` says where the weights came from (a path, or ``"random"`` / ``"tiny:<key>"``).
    Grey images are repeated to 3 channels when the VAE expects colour (e.g. an SD VAE), and the
    reveal is averaged back to one channel, so callers never see the channel mismatch.
    """

    #: the diffusers ``AutoencoderKL`` (typed ``Any``: diffusers modules carry a dynamic ``config``)
    vae: Any

    def __init__(self, vae: Any, source: str = "random") -> None:
        super().__init__()
        self.vae = vae
        self.source = source
        self.vae.requires_grad_(False)
        self.eval()

    @property
    def in_channels(self) -> int:
        return int(self.vae.config.in_channels)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def _to_vae(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != self.in_channels:
            raise DataError(f"images have {x.shape[1]} channels, the VAE expects {self.in_channels}")
        return x * 2.0 - 1.0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): posterior mode, (N, c_z, h, w). Differentiable in ``x``."""
        return self.vae.encode(self._to_vae(x)).latent_dist.mode()

    def posterior(self, x: torch.Tensor):
        """The diagonal Gaussian posterior q(z | x) (diffusers ``DiagonalGaussianDistribution``)."""
        return self.vae.encode(self._to_vae(x)).latent_dist

    def decode(self, z: torch.Tensor, channels: int | None = None) -> torch.Tensor:
        """D(z) in [0, 1], (N, C, H, W); ``channels=1`` averages a colour output to grey."""
        out = ((self.vae.decode(z).sample + 1.0) / 2.0).clamp(0.0, 1.0)
        if channels == 1 and out.shape[1] == 3:
            out = out.mean(1, keepdim=True)
        return out

    def reveal(self, x: torch.Tensor) -> torch.Tensor:
        """D(E(x)): what the latent model 'sees' in ``x``, same shape as ``x``."""
        return self.decode(self.encode(x), channels=x.shape[1])

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        with torch.no_grad():
            z = self.encode(torch.zeros(1, *image_shape, dtype=self.dtype, device=self.device))
        c, h, w = z.shape[1:]
        return int(c), int(h), int(w)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where the VAE's weights live (inputs are moved here by the callers in this package)."""
        return next(self.vae.parameters()).device


@dataclass(frozen=True)
class TinyVAEPreset:
    """A named local VAE: architecture (``in_channels`` is set from the dataset) and training recipe."""

    arch: TinyVAEConfig
    recipe: VAETrainConfig
    description: str = ""


VAE_PRESETS: Registry[TinyVAEPreset] = Registry("tiny VAE preset")
VAE_PRESETS.add("small", TinyVAEPreset(TinyVAEConfig(), VAETrainConfig(), "32x32 -> 4x8x8 (f = 4, 12x compression)"))
VAE_PRESETS.add("sd", TinyVAEPreset(
    TinyVAEConfig(block_out_channels=(16, 32, 64, 64)),
    VAETrainConfig(num_images=5000, epochs=10),
    "Stable-Diffusion-like: 32x32 -> 4x4x4 (f = 8, 4 latent channels, 48x compression, as SD's VAE)",
))


def build_tiny_vae(config: TinyVAEConfig | None = None, *, seed: int = 0) -> LatentAutoencoder:
    """A randomly initialised (seeded) small AutoencoderKL."""
    require_diffusers()
    from diffusers import AutoencoderKL

    cfg = config or TinyVAEConfig()
    n = len(cfg.block_out_channels)
    with seeded_rng(seed):
        vae = AutoencoderKL(
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_num_groups,
            sample_size=cfg.sample_size,
            mid_block_add_attention=cfg.mid_block_add_attention,
        )
    return LatentAutoencoder(vae, source="random")


def train_vae(
    model: LatentAutoencoder,
    x: torch.Tensor,
    config: VAETrainConfig,
    generator: torch.Generator,
    *,
    progress: bool = False,
) -> list[float]:
    """Train ``model.vae`` in place on images ``x`` (N, C, H, W) in [0, 1]; returns per-epoch losses.

    Loss per batch: mean |x̂ - x| + mse_weight·mean (x̂ - x)² + kl_weight·KL(q(z|x) || N(0, I)) / numel,
    with x̂ = D(z), z ~ q(z|x) (reparameterised; the noise comes from ``generator``).
    Runs where the VAE lives: ``x`` is moved there once, batch order and noise are drawn there
    (:func:`~poisonlab.seeding.device_generator`), and the loss reaches the host once per epoch.
    This is not poisonlab's classification loop (:func:`poisonlab.training.train`, cross-entropy):
    a VAE has no labels and needs the posterior sample, so it has this small loop of its own.
    """
    vae = model.vae
    vae.requires_grad_(True).train()
    opt = torch.optim.Adam(vae.parameters(), lr=config.lr)
    n = len(x)
    x = x.to(model.device, model.dtype)
    g = device_generator(generator, model.device)

    def step(index: torch.Tensor) -> torch.Tensor:
        xb = x[index]
        post = model.posterior(xb)
        eps = torch.randn(post.mean.shape, generator=g, dtype=post.mean.dtype, device=g.device).to(post.mean.device)
        z = post.mean + post.std * eps
        rec = (vae.decode(z).sample + 1.0) / 2.0
        kl = 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).sum() / xb.numel()
        loss = (rec - xb).abs().mean() + config.mse_weight * (rec - xb).pow(2).mean() + config.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    losses = shuffled_epochs(n, config.batch_size, config.epochs, g, step, desc="train VAE", progress=progress)
    vae.requires_grad_(False).eval()
    return losses


@torch.no_grad()
def set_scaling_factor(model: LatentAutoencoder, x: torch.Tensor) -> float:
    """Set ``vae.config.scaling_factor`` = 1 / std(E(x)) (SD uses 0.18215 the same way)."""
    z = torch.cat([model.encode(x[i : i + 256].to(model.device, model.dtype)) for i in range(0, len(x), 256)])
    sf = float(1.0 / z.std().clamp_min(1e-8))
    model.vae.register_to_config(scaling_factor=sf)
    return sf


# ------------------------------------------------------------------------- save / load / cache
def save_vae(model: LatentAutoencoder, directory: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """diffusers layout (config.json + diffusion_pytorch_model.safetensors), written atomically."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        model.vae.save_pretrained(tmp, safe_serialization=True)
        if meta is not None:
            (tmp / "poisonlab.json").write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def load_vae(path: str | Path, *, dtype: torch.dtype = torch.float32) -> LatentAutoencoder:
    """Load an AutoencoderKL from a local directory: a VAE folder (``config.json``) or a Stable
    Diffusion pipeline folder (``vae/config.json``). Never touches the network."""
    require_diffusers()
    from diffusers import AutoencoderKL

    p = Path(path).expanduser()
    if (p / "config.json").is_file():
        sub = None
    elif (p / "vae" / "config.json").is_file():
        sub = "vae"
    else:
        raise DataError(f"{p}: no AutoencoderKL here (expected {p}/config.json or {p}/vae/config.json)")
    try:
        vae = AutoencoderKL.from_pretrained(p, subfolder=sub, local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: cannot load AutoencoderKL: {exc}") from None
    return LatentAutoencoder(vae, source=str(p))


def tiny_vae_key(dataset: str, arch: TinyVAEConfig, recipe: VAETrainConfig, seed: int, device_type: str = "cpu") -> str:
    """The cache key of a tiny VAE; the device it was trained on counts when it is not the CPU
    (GPU kernels give other weights; CPU keys are those of the releases before devices counted)."""
    spec: dict[str, Any] = {"dataset": dataset, "arch": config_to_dict(arch), "recipe": config_to_dict(recipe), "seed": seed}
    if device_type != "cpu":
        spec["device"] = device_type
    blob = json.dumps(
        spec,
        sort_keys=True,
        default=list,
    )
    return f"{dataset}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def dataset_images(dataset: str, data_dir: str | Path | None, size: int, num: int, seed: int) -> torch.Tensor:
    """``num`` training images of ``dataset`` (seeded choice), zero-padded / centre-cropped to ``size``."""
    from ..data import load_dataset

    train = load_dataset(dataset, data_dir).train
    g = torch_generator(seed, "vae/images")
    idx = torch.randperm(len(train), generator=g, device=g.device)[: min(num, len(train))]
    return fit_size(train.x[idx], size)


def fit_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad (or centre-crop) (N, C, H, W) to (N, C, size, size); e.g. 28x28 MNIST -> 32x32."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    out = x.new_zeros(*x.shape[:-2], size, size)
    hh, ww = min(h, size), min(w, size)
    sy, sx = (h - hh) // 2, (w - ww) // 2
    dy, dx = (size - hh) // 2, (size - ww) // 2
    out[..., dy : dy + hh, dx : dx + ww] = x[..., sy : sy + hh, sx : sx + ww]
    return out


def tiny_vae(
    dataset: str = "cifar10",
    *,
    data_dir: str | Path | None = None,
    arch: TinyVAEConfig | None = None,
    recipe: VAETrainConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    retrain: bool = False,
    preset: str = "small",
    device: str | torch.device = "auto",
) -> LatentAutoencoder:
    """The offline default VAE: trained here on ``dataset`` once, then loaded from the cache.

    ``preset`` (:data:`VAE_PRESETS`) gives the architecture and recipe that ``arch`` / ``recipe``
    do not; its ``in_channels`` is replaced by the dataset's. The cache key is the dataset, the
    resolved architecture and recipe, the seed and (other than the CPU) the device type.
    ``device`` ("auto": CUDA when available; see :func:`poisonlab.training.resolve_device`) is
    where it is trained and where the returned model lives; checked before any work.
    """
    from ..data import load_dataset
    from ..training import resolve_device

    dev = resolve_device(device)

    p = VAE_PRESETS.get(preset)
    recipe = recipe or p.recipe
    if arch is None:
        channels = load_dataset(dataset, data_dir).train.x.shape[1] if dataset != "cifar10" else 3
        arch = replace(p.arch, in_channels=int(channels))
    key = tiny_vae_key(dataset, arch, recipe, seed, dev.type)
    path = vae_dir() / key
    if (path / "config.json").is_file() and not retrain:
        model = load_vae(path).to(dev)
        model.source = f"tiny:{key}"
        return model
    x = dataset_images(dataset, data_dir, arch.sample_size, recipe.num_images, seed)
    if x.shape[1] != arch.in_channels:
        raise ConfigError(f"{dataset} has {x.shape[1]} channels, the VAE config says {arch.in_channels}")
    model = build_tiny_vae(arch, seed=seed).to(dev)
    t0 = time.perf_counter()
    losses = train_vae(model, x, recipe, torch_generator(seed, "vae/train"), progress=progress)
    train_seconds = time.perf_counter() - t0
    sf = set_scaling_factor(model, x)
    meta = {"dataset": dataset, "seed": seed, "arch": config_to_dict(arch), "recipe": config_to_dict(recipe),
            "train_seconds": train_seconds,
            "epoch_losses": losses, "scaling_factor": sf}
    meta["device"] = str(dev)
    save_vae(model, path, meta)
    model.source = f"tiny:{key}"
    return model


def parse_tiny_spec(spec: str) -> tuple[str, str]:
    """``tiny:<dataset>[:<preset>]`` -> (dataset, preset); the preset defaults to ``small``."""
    parts = spec.split(":")
    if parts[0] != "tiny" or len(parts) not in (2, 3) or not parts[1]:
        raise ConfigError(f"VAE {spec!r}: expected tiny:<dataset>[:<preset>], e.g. tiny:cifar10 or tiny:cifar10:sd")
    preset = parts[2] if len(parts) == 3 else "small"
    VAE_PRESETS.get(preset)  # unknown presets raise, naming the valid ones
    return parts[1], preset


#: the pretrained latent autoencoders shipped with poisonlab, by ``--vae`` name (no training, no diffusers)
PRETRAINED_VAES = ("taef2",)


def vae_spec_error(spec: str) -> ConfigError:
    """THE message for a ``--vae`` / :func:`get_vae` spec that names no VAE."""
    return ConfigError(f"VAE {spec!r}: give 'taef2' (the shipped FLUX.2-latent tiny autoencoder), a local AutoencoderKL "
                       "directory or 'tiny:<dataset>[:<preset>]' (e.g. tiny:cifar10:sd)")


def get_vae(spec: str, *, data_dir: str | Path | None = None, seed: int = 0, progress: bool = True,
            device: str | torch.device = "cpu") -> "LatentAutoencoder | TAEF2Autoencoder":
    """The latent autoencoder named by ``spec``:

    - ``taef2``: the shipped pretrained tiny autoencoder of the FLUX.2 latent space
      (:func:`poisonlab.generative.taef2.load_taef2_autoencoder`; not Stable Diffusion's VAE);
    - a local directory (real SD VAE / saved AutoencoderKL / SD pipeline folder);
    - ``tiny:<dataset>[:<preset>]``, trained here once and cached (``tiny:cifar10`` = preset
      ``small``, ``tiny:cifar10:sd`` = the SD-like 48x VAE).

    The VAE is returned on ``device`` (default the CPU; "auto": CUDA when available), where a tiny
    one is also trained; the device is checked before anything is loaded or trained.
    """
    from ..training import resolve_device

    dev = resolve_device(device)
    if spec == "taef2":
        from .taef2 import load_taef2_autoencoder

        return load_taef2_autoencoder().to(dev)
    require_diffusers()
    if spec.startswith("tiny:"):
        dataset, preset = parse_tiny_spec(spec)
        return tiny_vae(dataset, data_dir=data_dir, seed=seed, progress=progress, preset=preset, device=dev)
    if Path(spec).expanduser().exists():
        return load_vae(spec).to(dev)
    raise vae_spec_error(spec)
