"""taef2: a tiny autoencoder of the FLUX.2 latent space (real pretrained weights, MIT).

A small convolutional encoder/decoder pair distilled (by its author) to reproduce the latents of
the FLUX.2 VAE, a released latent-diffusion text-to-image model: images -> the 32-channel,
8x-downsampled latents that diffusion model trains on. It is *not* Stable Diffusion's VAE
(4 latent channels); no SD-latent autoencoder could be had offline. Source: GitHub
``madebyollin/taesd`` at commit ``5cccb12`` ("Add support for FLUX.2 VAE"), files
``taef2_encoder.pth`` / ``taef2_decoder.pth``, converted to safetensors (names and float16 values
unchanged). MIT licence, (c) 2023 Ollin Boer Bohan; ``weights/taef2/LICENSE`` travels with them.

The modules below are written here from the description of the architecture; that the weights
load with ``strict=True`` confirms every tensor name and shape. Conventions:

- :class:`TAEF2Encoder`: (N, 3, H, W) RGB in [0, 1], H and W divisible by 8 -> (N, 32, H/8, W/8)
  raw latents (roughly within ±4 on photographs);
- :class:`TAEF2Decoder`: latents -> (N, 3, H, W), about [0, 1] (not clamped here);
- weights are stored in float16 and run in float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ...errors import DataError
from ._files import WeightFile, find_weight_dir, load_strict, read_safetensors

NAME = "taef2"
LATENT_CHANNELS = 32
DOWNSAMPLING = 8
WIDTH = 64
ENCODER_FILE = WeightFile("taef2_encoder.safetensors",
                          "f4b81e2140d2872c5003843e1bb9f7ea6ed0e7c50beec99b7468b667e9a34154", 2683600)
DECODER_FILE = WeightFile("taef2_decoder.safetensors",
                          "a307a31a456973b018a6a7ed889a2d91b98f72744a463414ecad0186c6c8fa17", 2683558)
#: provenance, as recorded by :func:`info`
SOURCE = {
    "name": NAME,
    "origin": "GitHub madebyollin/taesd @ 5cccb12, taef2_encoder.pth / taef2_decoder.pth",
    "original_sha256": {"taef2_encoder.pth": "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
                        "taef2_decoder.pth": "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5"},
    "format": "safetensors, float16 (converted from the .pth; names and values unchanged)",
    "license": "MIT, (c) 2023 Ollin Boer Bohan",
    "latent_space": "FLUX.2 VAE (32 channels, f = 8); not Stable Diffusion's VAE",
    "files": {f.name: {"sha256": f.sha256, "bytes": f.size} for f in (ENCODER_FILE, DECODER_FILE)},
    "parameters": {"encoder": 1338528, "decoder": 1338499},
}


def _conv(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class _PoolBranch(nn.Sequential):
    """1x1 conv (c -> 4c, no bias) -> GroupNorm(4, 4c) -> ReLU -> 1x1 conv (4c -> c, no bias)."""

    def __init__(self, c: int) -> None:
        super().__init__(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(),
                         nn.Conv2d(4 * c, c, 1, bias=False))


class TAEBlock(nn.Module):
    """Residual block: ReLU(convs(x') + skip(x')), x' = x (+ pool(x) when ``pool``); convs are
    three 3x3 convolutions with ReLUs between them; skip is the identity (n_in = n_out) or a
    bias-free 1x1 convolution."""

    def __init__(self, n_in: int, n_out: int, *, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.pool = _PoolBranch(n_in) if pool else None
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


class SoftClamp(nn.Module):
    """limit · tanh(z / limit) (the decoder's first layer; limit 3)."""

    def __init__(self, limit: float = 3.0) -> None:
        super().__init__()
        self.limit = float(limit)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / self.limit) * self.limit


class TAEF2Encoder(nn.Sequential):
    """(N, 3, H, W) in [0, 1] -> (N, 32, H/8, W/8) raw FLUX.2-space latents (module indices = the
    weight files' tensor-name prefixes)."""

    def __init__(self, width: int = WIDTH, latent_channels: int = LATENT_CHANNELS) -> None:
        layers: list[nn.Module] = [_conv(3, width), TAEBlock(width, width)]
        for stage in range(3):
            layers.append(_conv(width, width, stride=2, bias=False))
            layers += [TAEBlock(width, width, pool=stage == 2) for _ in range(3)]
        layers.append(_conv(width, latent_channels))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] % DOWNSAMPLING or x.shape[-2] % DOWNSAMPLING:
            raise DataError(f"taef2 encodes (N, 3, H, W) RGB images with H, W divisible by {DOWNSAMPLING}, got {tuple(x.shape)}")
        return super().forward(x)


class TAEF2Decoder(nn.Sequential):
    """(N, 32, h, w) latents -> (N, 3, 8h, 8w) images (about [0, 1]; not clamped)."""

    def __init__(self, width: int = WIDTH, latent_channels: int = LATENT_CHANNELS) -> None:
        layers: list[nn.Module] = [SoftClamp(3.0), _conv(latent_channels, width), nn.ReLU()]
        layers += [TAEBlock(width, width, pool=True) for _ in range(3)]
        for n_blocks in (3, 3, 1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(width, width, bias=False)]
            layers += [TAEBlock(width, width) for _ in range(n_blocks)]
        layers.append(_conv(width, 3))
        super().__init__(*layers)


def weight_dir(directory: str | os.PathLike | None = None) -> Path:
    """Where the two safetensors files are (see :mod:`._files` for the search order)."""
    return find_weight_dir(NAME, (ENCODER_FILE, DECODER_FILE), directory,
                           hint="They ship with poisonlab (poisonlab/models/pretrained/weights/taef2); "
                                "reinstall it if they are missing.")


def load_taef2(directory: str | os.PathLike | None = None, *, dtype: torch.dtype = torch.float32
               ) -> tuple[TAEF2Encoder, TAEF2Decoder]:
    """The pretrained (encoder, decoder), eval mode, gradients off, in ``dtype`` (default float32).

    Each file's sha256 is checked before it is read; a missing directory, a missing file or a
    checksum mismatch raises :class:`~poisonlab.errors.DataError` naming the file.
    """
    d = weight_dir(directory)
    enc = load_strict(TAEF2Encoder(), read_safetensors(d / ENCODER_FILE.name, ENCODER_FILE), d / ENCODER_FILE.name)
    dec = load_strict(TAEF2Decoder(), read_safetensors(d / DECODER_FILE.name, DECODER_FILE), d / DECODER_FILE.name)
    for m in (enc, dec):
        m.to(dtype).eval().requires_grad_(False)  # in place
    return enc, dec


def info(directory: str | os.PathLike | None = None) -> dict:
    """Provenance record (source, licence, files with sha256 and sizes) plus the directory used."""
    return {**SOURCE, "directory": str(weight_dir(directory))}
