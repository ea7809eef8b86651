"""The small AutoencoderKL of the disguise study, trained (or loaded from the cache) and scored:
what ``pl.train_vae`` and ``poisonlab vae`` do.

:func:`train_and_score_vae` checks every input before any work, gets the tiny VAE of a preset
(:func:`.vae.tiny_vae`: trained once on the dataset's training images, then cached under
``<cache root>/vae``), measures its reconstruction SSIM on the first test images, and optionally
copies it to a folder of its own (diffusers layout, safetensors).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import load_dataset
from ..data.sources import check_dataset_name
from ..devices import resolve_device
from ..errors import ConfigError
from ..options import config_to_dict
from ..paths import vae_dir
from ..validation import check_bool, check_int, check_output_dir
from .metrics import ssim
from .vae import VAE_PRESETS, LatentAutoencoder, fit_size, save_vae, tiny_vae

_WHAT = "train_vae"


@dataclass(frozen=True)
class TrainedVAE:
    """The tiny VAE :func:`train_and_score_vae` trained or loaded (``pl.train_vae`` returns it).

    Attributes:
        source: ``tiny:<cache key>``, the ``--vae`` / ``get_vae`` spec of this VAE's cache entry.
        cache_dir: the VAE cache (``<cache root>/vae``) holding it.
        latent_shape: (c_z, h, w) of one test image's latent.
        compression: input numbers per latent number for the test images (C·H·W / c_z·h·w).
        scaling_factor: the latent scaling factor (1 / std of the training latents).
        test_ssim_mean: mean reconstruction SSIM(x, D(E(x))) over the test images.
        test_ssim_min: the smallest of those SSIMs.
        test_images: how many test images were scored (the first ``test_images`` of the test split).
        saved: the folder the VAE was copied to, or None.
        vae: the model itself (not in :meth:`to_dict`).
    """

    source: str
    cache_dir: Path
    latent_shape: tuple[int, int, int]
    compression: float
    scaling_factor: float
    test_ssim_mean: float
    test_ssim_min: float
    test_images: int
    saved: Path | None
    vae: LatentAutoencoder = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (what ``poisonlab vae`` prints)."""
        return {
            "source": self.source, "cache_dir": str(self.cache_dir), "latent_shape": list(self.latent_shape),
            "compression": self.compression, "scaling_factor": self.scaling_factor,
            "test_ssim_mean": self.test_ssim_mean, "test_ssim_min": self.test_ssim_min, "test_images": self.test_images,
            "saved": None if self.saved is None else str(self.saved),
        }


def train_and_score_vae(
    dataset: str = "cifar10",
    *,
    preset: str = "sd",
    epochs: int | None = None,
    num_images: int | None = None,
    data_dir: str | Path | None = None,
    retrain: bool = False,
    save: str | Path | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    test_images: int = 500,
    progress: bool = True,
) -> TrainedVAE:
    """Get the tiny VAE of ``preset`` for ``dataset`` (``epochs`` / ``num_images`` replace the
    preset's), score it on ``test_images`` test images and copy it to ``save`` (see the module
    docstring). Every input is checked before any work."""
    if not isinstance(dataset, str):
        raise ConfigError(f"{_WHAT}: dataset must be a registered name or a .npz path, got {dataset!r}")
    check_dataset_name(dataset, _WHAT)
    if not isinstance(preset, str):
        raise ConfigError(f"{_WHAT}: preset must be one of {VAE_PRESETS.names()}, got {preset!r}")
    recipe = VAE_PRESETS.get(preset).recipe
    opts = {k: v for k, v in (("epochs", epochs), ("num_images", num_images)) if v is not None}
    recipe = type(recipe).from_dict({**config_to_dict(recipe), **opts})
    dev = resolve_device(device)  # an impossible device fails here, before anything is trained
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"{_WHAT}: data_dir must be a directory path or None, got {data_dir!r}")
    check_bool(retrain, "retrain", _WHAT)
    save_dir = None if save is None else check_output_dir(save, "save", _WHAT)
    check_int(seed, "seed", _WHAT, minimum=0)
    check_int(test_images, "test_images", _WHAT)
    check_bool(progress, "progress", _WHAT)

    vae = tiny_vae(dataset, data_dir=data_dir, recipe=recipe, seed=seed, retrain=retrain, preset=preset, device=dev,
                   progress=progress)
    test = load_dataset(dataset, data_dir).test
    x = fit_size(test.x[:test_images], int(vae.vae.config.sample_size)).to(dev)
    with torch.no_grad():
        s = ssim(x, vae.reveal(x))
    c, h, w = (int(n) for n in x.shape[1:])
    zs = vae.latent_shape((c, h, w))
    if save_dir is not None:
        save_vae(vae, save_dir)
    return TrainedVAE(vae.source, vae_dir(), zs, c * h * w / (zs[0] * zs[1] * zs[2]), float(vae.scaling_factor),
                      float(s.mean()), float(s.min()), len(x), save_dir, vae)
