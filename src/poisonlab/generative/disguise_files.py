"""A disguise from two image files, end to end: the pieces of ``pl.disguise`` (``poisonlab disguise``).

Thesis chapter 5. ``pl.disguise`` checks every input before any work (getting the VAE can mean
training one for minutes) with the checks here — the VAE's geometry known without loading its
weights (:func:`vae_geometry`: taef2's f = 8, a tiny preset, or a local ``config.json``), the image
size against it (:func:`check_size`), the paths — gets the VAE (:func:`.vae.get_vae`), and
:func:`craft_and_write` crafts the disguise of the copyrighted image on the base image
(:func:`.disguise.craft_disguises`), reveals it, scores it with both detectors (:mod:`.detect`) and
writes ``disguise.png``, ``reveal.png``, ``grid.png`` and ``metrics.json``.

The errors name each input by the command's flag (``--base``, ``--size``, ...), so the command and
the function say the same thing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..artifacts import write_json
from ..data.sources import check_dataset_name
from ..errors import ConfigError, DataError
from ..seeding import torch_generator
from .detect import latent_screening_scores, reconstruction_scores
from .disguise import DisguiseConfig, craft_disguises, summarize
from .images import image_grid, image_tensor, write_image
from .vae import LatentAutoencoder, LatentCodec

if TYPE_CHECKING:
    from PIL.Image import Image

#: the SSIM window of the metrics (generative.metrics.ssim's default): images must be at least this large
MIN_SIZE = 7
#: the files written to the output folder, by key of :attr:`CraftedDisguise.files`
IMAGE_FILES = ("disguise", "reveal", "grid")


@dataclass(frozen=True)
class VaeGeometry:
    """What the size check needs of a VAE, known before it is loaded or trained: its default image
    size and its spatial downsampling factor f (the image side must be a multiple of f)."""

    sample_size: int
    downsampling: int
    source: str


def vae_geometry(spec: str) -> VaeGeometry:
    """The geometry of the VAE ``spec`` names (as :func:`.vae.get_vae` reads it): taef2's, the tiny
    preset's (its dataset checked too), or a local directory's ``config.json`` (or
    ``vae/config.json``). Raises ConfigError / DataError for a spec that cannot be a VAE."""
    from .vae import VAE_PRESETS, parse_tiny_spec, require_diffusers, vae_spec_error

    if spec == "taef2":
        from ..models.pretrained.taef2 import weight_dir
        from .taef2 import DOWNSAMPLING, TAEF2_SAMPLE_SIZE

        return VaeGeometry(TAEF2_SAMPLE_SIZE, DOWNSAMPLING, f"taef2 in {weight_dir()}")  # raises when the weights are missing
    require_diffusers()
    if spec.startswith("tiny:"):
        dataset, preset = parse_tiny_spec(spec)
        check_dataset_name(dataset, f"--vae tiny:{dataset}")
        arch = VAE_PRESETS.get(preset).arch
        return VaeGeometry(int(arch.sample_size), int(arch.downsampling), f"preset {preset!r}")
    p = Path(spec).expanduser()
    if not p.exists():
        raise vae_spec_error(spec)
    cfg_path = next((c for c in (p / "config.json", p / "vae" / "config.json") if c.is_file()), None)
    if cfg_path is None:
        raise DataError(f"{p}: no AutoencoderKL here (expected {p}/config.json or {p}/vae/config.json)")
    try:
        config = json.loads(cfg_path.read_text())
        blocks = config.get("block_out_channels") or [0]
        return VaeGeometry(int(config.get("sample_size") or 0), 2 ** (len(blocks) - 1), str(cfg_path))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{cfg_path}: cannot read the VAE's config ({exc})") from None


def check_size(size: int | None, geometry: VaeGeometry) -> int | None:
    """``size`` (or the VAE's default size when None) checked against the VAE: a positive multiple
    of its downsampling factor, at least the SSIM window. Returns ``size`` unchanged."""
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ConfigError(f"--size must be an integer (pixels) or None, got {size!r}")
    f = geometry.downsampling
    side = size if size is not None else geometry.sample_size
    what = f"--size {size}" if size is not None else f"the VAE's image size {side} ({geometry.source}; set --size)"
    if size is not None and size <= 0:
        raise ConfigError(f"--size must be positive, got {size}")
    if side and (side % f or side < MIN_SIZE):
        raise ConfigError(f"{what}: the image side must be a multiple of the VAE's downsampling factor {f} "
                          f"and at least {MIN_SIZE} pixels")
    return size


@dataclass(frozen=True)
class CraftedDisguise:
    """What ``pl.disguise`` made and returns (:func:`craft_and_write`).

    Attributes:
        variant: the disguise variant (``unbounded``, ``bounded``, ``flip``, ``evasive``).
        config: the variant's options with the overrides applied.
        vae: where the VAE came from (its ``source``).
        size: the image side the two images were resized to.
        seed: seeds the tiny VAE's training and ``init_noise``.
        seconds: wall time of the crafting (the VAE's loading or training not included).
        metrics: the crafting's metrics (:func:`.disguise.disguise_metrics`, mean over the image):
            ``latent_dist`` (to E(x_c)), ``latent_dist_base``, ``ssim_base``, ``lpips_base``,
            ``linf_base``, ``reveal_ssim_copyright``, ...
        detector_scores: both detectors' scores of the disguise and of the base image.
        files: the images written (``disguise``, ``reveal``, ``grid``); ``metrics.json`` is beside them.
        disguise: x_d, (1, C, size, size) in [0, 1] (not in :meth:`to_dict`).
        reveal: D(E(x_d)), same shape (not in :meth:`to_dict`).
    """

    variant: str
    config: DisguiseConfig
    vae: str
    size: int
    seed: int
    seconds: float
    metrics: dict[str, float]
    detector_scores: dict[str, float]
    files: dict[str, Path]
    disguise: torch.Tensor = field(repr=False, compare=False)
    reveal: torch.Tensor = field(repr=False, compare=False)

    @property
    def directory(self) -> Path:
        """The output folder (``metrics.json`` and the images)."""
        return self.files["disguise"].parent

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` record."""
        return {
            "variant": self.variant,
            "config": {f: getattr(self.config, f) for f in self.config.__dataclass_fields__},
            "vae": self.vae,
            "size": self.size,
            "seed": self.seed,
            "seconds": self.seconds,
            "metrics": dict(self.metrics),
            "detector_scores": dict(self.detector_scores),
            "files": {k: str(v) for k, v in self.files.items()},
        }


def check_path(value: Any, flag: str) -> Path:
    """``value`` as a path (a non-empty str or os.PathLike), else a ConfigError naming ``flag``."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{flag} must be a path (str or os.PathLike), got {value!r}")
    return Path(value)


def check_out_folder(out: Any) -> Path:
    """The output folder: a path that is a folder or is not there yet (made when written)."""
    folder = check_path(out, "--out")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} exists and is not a folder")
    return folder


def craft_and_write(model: LatentCodec, copyrighted: Image, base: Image, *, variant: str, config: DisguiseConfig,
                    size: int | None, out: Path, seed: int, progress: bool) -> CraftedDisguise:
    """The work of ``pl.disguise`` once its inputs are checked and the VAE is there: both decoded
    images resized to ``size`` (None: the VAE's sample size) with the VAE's channels, the disguise
    crafted (``init_noise`` drawn from ``seed``), revealed and scored by both detectors, and
    ``disguise.png``, ``reveal.png``, ``grid.png`` and ``metrics.json`` written to ``out``."""
    side = size
    if not side:  # an AutoencoderKL folder whose config names no sample size (taef2 and the presets always do)
        assert isinstance(model, LatentAutoencoder)
        side = int(model.vae.config.sample_size)
    channels = 3 if model.in_channels == 3 else 1
    x_c = image_tensor(copyrighted, size=side, channels=channels).to(model.device)
    x_b = image_tensor(base, size=side, channels=channels).to(model.device)
    t0 = time.perf_counter()
    res = craft_disguises(model, x_b, x_c, config, progress=progress, generator=torch_generator(seed, "disguise/init"))
    seconds = time.perf_counter() - t0
    files = {k: out / f"{k}.png" for k in IMAGE_FILES}
    write_image(files["disguise"], res.disguise)
    write_image(files["reveal"], res.reveal)
    with torch.no_grad():
        recon_c = model.reveal(x_c)
        det = {
            "reconstruction_1_minus_ssim": float(reconstruction_scores(model, res.disguise)[0]),
            "reconstruction_1_minus_ssim_base": float(reconstruction_scores(model, x_b)[0]),
            "latent_screening": float(latent_screening_scores(model, res.disguise, x_c)[0]),
            "latent_screening_base": float(latent_screening_scores(model, x_b, x_c)[0]),
        }
    metrics = summarize(res.metrics)
    image_grid(
        files["grid"],
        [("base", x_b), ("disguise", res.disguise), ("reveal D(E(x_d))", res.reveal), ("copyrighted", x_c), ("D(E(x_c))", recon_c)],
        title=f"{variant}: latent dist {metrics['latent_dist']:.3f} (base {metrics['latent_dist_base']:.3f}), "
        f"SSIM to base {metrics['ssim_base']:.3f}, reveal SSIM to copyrighted {metrics['reveal_ssim_copyright']:.3f}",
    )
    result = CraftedDisguise(variant, config, model.source, side, seed, seconds, metrics, det, files,
                             disguise=res.disguise.cpu(), reveal=res.reveal.cpu())
    write_json(out / "metrics.json", result.to_dict())
    return result
