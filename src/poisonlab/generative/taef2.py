"""The real pretrained taef2 autoencoder as the disguise study's latent encoder E / decoder D.

:class:`TAEF2Autoencoder` has the interface of :class:`~poisonlab.generative.vae.LatentAutoencoder`
that :mod:`.disguise`, :mod:`.detect` and :mod:`.latent_model` use (``encode``, ``decode``,
``reveal``, ``scaling_factor``, ``dtype``, ``in_channels``, ``source``, ``latent_shape``), so
disguises are crafted against it unchanged::

    from poisonlab.generative.taef2 import load_taef2_autoencoder
    vae = load_taef2_autoencoder()
    res = craft_disguises(vae, x_b, x_c, variant_config("bounded"))

taef2 is a tiny autoencoder of the **FLUX.2** latent space (32 channels, f = 8: 256x256 -> 32x32x32,
6x compression), distilled to reproduce the FLUX.2 VAE's latents — a real latent-diffusion
encoder, but not Stable Diffusion's (4 channels, 48x). See :mod:`poisonlab.models.pretrained.taef2`
for the weights, their provenance and checks.

Conventions as in :mod:`.vae`: images (N, 3, H, W) in [0, 1] (grey images are repeated to RGB and
reveals averaged back), ``encode`` is deterministic (taef2 has no posterior; it is its own mode),
``decode`` clamps to [0, 1]. ``scaling_factor`` = 1 / std of taef2's latents of 18 real photographs
at 256x256 (scikit-learn's two and scikit-image's 16, measured 0.820 -> 1.22), the role SD's 0.18215
plays: it puts the disguise objective's latent term on the unit scale, so α means what it means for
the other VAEs.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import DataError
from ..models.pretrained.taef2 import DOWNSAMPLING, LATENT_CHANNELS, load_taef2

#: 1 / std(E(x)) over the 18 bundled photographs at 256x256 (std 0.820)
TAEF2_SCALING_FACTOR = 1.22
#: the default image side for taef2 (``poisonlab disguise --vae taef2``): what the scaling factor
#: was measured at; any multiple of :data:`DOWNSAMPLING` works
TAEF2_SAMPLE_SIZE = 256


class TAEF2Autoencoder(nn.Module):
    """taef2's (encoder, decoder) behind the :class:`~poisonlab.generative.vae.LatentAutoencoder` interface."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, source: str = "taef2",
                 scaling_factor: float = TAEF2_SCALING_FACTOR) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.source = source
        self._scaling_factor = float(scaling_factor)
        self.requires_grad_(False)
        self.eval()

    in_channels = 3
    latent_channels = LATENT_CHANNELS
    downsampling = DOWNSAMPLING

    @property
    def scaling_factor(self) -> float:
        return self._scaling_factor

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _rgb(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.ndim != 4 or x.shape[1] != 3:
            raise DataError(f"taef2 takes (N, 3, H, W) or (N, 1, H, W) images, got {tuple(x.shape)}")
        return x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): (N, 32, H/8, W/8) raw latents (unscaled). Differentiable in ``x``."""
        return self.encoder(self._rgb(x))

    def decode(self, z: torch.Tensor, channels: int | None = None) -> torch.Tensor:
        """D(z) clamped to [0, 1], (N, 3, 8h, 8w); ``channels=1`` averages it to grey."""
        out = self.decoder(z).clamp(0.0, 1.0)
        if channels == 1:
            out = out.mean(1, keepdim=True)
        return out

    def reveal(self, x: torch.Tensor) -> torch.Tensor:
        """D(E(x)), the same shape as ``x``."""
        return self.decode(self.encode(x), channels=x.shape[1])

    def latent_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        _, h, w = image_shape
        return (LATENT_CHANNELS, h // DOWNSAMPLING, w // DOWNSAMPLING)


def load_taef2_autoencoder(directory: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32
                           ) -> TAEF2Autoencoder:
    """The pretrained taef2 as a latent autoencoder (weights checked by sha256; float32 by default)."""
    enc, dec = load_taef2(directory, dtype=dtype)
    return TAEF2Autoencoder(enc, dec, source="taef2 (FLUX.2 latent space, madebyollin/taesd@5cccb12)")
