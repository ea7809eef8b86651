"""How good a latent autoencoder's reconstructions are, for ``pl.train_vae`` (``poisonlab vae``):
:func:`score_vae` measures the reconstruction SSIM on a dataset's first test images, reads the
latent geometry, and optionally copies the VAE to a folder of its own (diffusers layout,
safetensors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import load_dataset
from ..paths import vae_dir
from .metrics import ssim
from .vae import LatentAutoencoder, fit_size, save_vae

#: how many test images :func:`score_vae` scores (the first ones of the test split)
TEST_IMAGES = 500


@dataclass(frozen=True)
class TrainedVAE:
    """A tiny VAE and its scores (``pl.train_vae`` returns it).

    Attributes:
        source: ``tiny:<cache key>``, the ``vae=`` / ``--vae`` spec of this VAE's cache entry.
        cache_dir: the VAE cache (``<cache root>/vae``) holding it.
        latent_shape: (c_z, h, w) of one test image's latent.
        compression: input numbers per latent number for the test images (C·H·W / c_z·h·w).
        scaling_factor: the latent scaling factor (1 / std of the training latents).
        test_ssim_mean: mean reconstruction SSIM(x, D(E(x))) over the test images.
        test_ssim_min: the smallest of those SSIMs.
        test_images: how many test images were scored (the first :data:`TEST_IMAGES` of the test split).
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


def score_vae(vae: LatentAutoencoder, dataset: str, *, data_dir: str | Path | None = None,
              save: Path | None = None) -> TrainedVAE:
    """Score ``vae`` (a tiny VAE trained on ``dataset``) on the first :data:`TEST_IMAGES` test images
    of ``dataset`` (fitted to its sample size, on its device) and copy it to ``save`` when given."""
    test = load_dataset(dataset, data_dir).test
    x = fit_size(test.x[:TEST_IMAGES], int(vae.vae.config.sample_size)).to(vae.device)
    with torch.no_grad():
        s = ssim(x, vae.reveal(x))
    c, h, w = (int(n) for n in x.shape[1:])
    zs = vae.latent_shape((c, h, w))
    if save is not None:
        save_vae(vae, save)
    return TrainedVAE(vae.source, vae_dir(), zs, c * h * w / (zs[0] * zs[1] * zs[2]), float(vae.scaling_factor),
                      float(s.mean()), float(s.min()), len(x), save, vae)
