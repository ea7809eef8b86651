"""Image similarity in torch (no torchvision, no downloaded weights): SSIM, MS-SSIM, and an
LPIPS-style distance on features of a fixed random convolutional network.

Used by the disguise objective (distance to the base image) and by the disguise detectors.
All functions take images in [0, 1] of shape (N, C, H, W) and return one value per image (N,);
they are differentiable.

- SSIM: Wang et al. 2004 with a Gaussian window (default 7x7, σ = 1.5, "valid" positions only,
  K1 = 0.01, K2 = 0.03), averaged over positions and channels.
- MS-SSIM: Wang, Simoncelli, Bovik 2003. ``scales`` levels (2x average pooling between them);
  contrast-structure terms at the finer levels, full SSIM at the coarsest, combined with the first
  ``scales`` of the standard exponents (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) renormalised to sum
  to 1 (5 levels need >= 7·16 = 112 pixels a side; 32x32 images take 3).
- LPIPS-style: Zhang et al. 2018 observed that even *random* deep features give a usable perceptual
  distance. :class:`RandomFeatureDistance` is a fixed, seeded 3-stage random conv net (no training,
  no weights download); features are unit-normalised over channels and the squared differences
  averaged over positions and summed over stages, as in LPIPS (with unit layer weights). It is a
  stand-in for LPIPS, not LPIPS: numbers are not comparable with published LPIPS values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..seeding import torch_generator

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
K1, K2 = 0.01, 0.03


def gaussian_window(size: int, sigma: float, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian window (size, size), built on ``device`` (default the CPU)."""
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"SSIM window size must be odd and >= 1, got {size}")
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def _check_pair(x: torch.Tensor, y: torch.Tensor, window_size: int) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ConfigError(f"SSIM needs two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window_size:
        raise ConfigError(f"images of size {tuple(x.shape[-2:])} are smaller than the SSIM window {window_size}")


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and mean contrast-structure term, each (N,)."""
    c = x.shape[1]
    w = gaussian_window(window_size, sigma, x.dtype, x.device).expand(c, 1, window_size, window_size)
    filt = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731  ("valid" positions only)
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor, *, window_size: int = 7, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image, (N,); 1 iff x == y (up to the stabilising constants)."""
    _check_pair(x, y, window_size)
    return _ssim_cs(x, y, window_size, sigma, data_range)[0]


def ms_ssim(
    x: torch.Tensor, y: torch.Tensor, *, scales: int = 3, window_size: int = 7, sigma: float = 1.5, data_range: float = 1.0
) -> torch.Tensor:
    """MS-SSIM per image, (N,). Negative contrast-structure terms are clipped at 0 (as in
    pytorch-msssim) so that fractional exponents stay real."""
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ConfigError(f"MS-SSIM scales must be in 1..{len(MS_SSIM_WEIGHTS)}, got {scales}")
    _check_pair(x, y, window_size)
    if min(x.shape[-2:]) < window_size * 2 ** (scales - 1):
        raise ConfigError(
            f"images of size {tuple(x.shape[-2:])} are too small for {scales} MS-SSIM scales with window {window_size}"
        )
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    out = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for level in range(scales):
        s, cs = _ssim_cs(x, y, window_size, sigma, data_range)
        term = s if level == scales - 1 else cs
        out = out * term.clamp_min(0.0) ** weights[level]
        if level < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return out


def fit_scales(size: tuple[int, int] | torch.Size, window_size: int = 7, max_scales: int = 3) -> int:
    """The most MS-SSIM scales (<= ``max_scales``, >= 1) that images of ``size`` (H, W) allow."""
    k = 1
    while k < max_scales and min(size) >= window_size * 2**k:
        k += 1
    return k


class RandomFeatureDistance(nn.Module):
    """LPIPS-style distance on a fixed random conv net (see module docstring); (N,) >= 0, 0 iff equal features."""

    def __init__(self, seed: int = 0, widths: tuple[int, ...] = (32, 64, 96)) -> None:
        super().__init__()
        g = torch_generator(seed, "metrics/random_features")
        layers, c_in = [], 3
        for c_out in widths:
            conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, device=g.device) * (2.0 / (c_in * 9)) ** 0.5)
                if conv.bias is not None:
                    conv.bias.zero_()
            layers.append(conv)
            c_in = c_out
        self.stages = nn.ModuleList(layers)
        self.requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the random features' weights."""
        return next(self.parameters()).dtype

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = x * 2.0 - 1.0
        feats = []
        for i, conv in enumerate(self.stages):
            h = F.relu(conv(h.to(self.dtype)))
            feats.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
            if i < len(self.stages) - 1 and min(h.shape[-2:]) >= 2:
                h = F.avg_pool2d(h, 2)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ConfigError(f"LPIPS-style distance needs tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        terms = [(a - b).pow(2).sum(1).flatten(1).mean(1) for a, b in zip(self.features(x), self.features(y))]
        return torch.stack(terms).sum(0)


_DEFAULT_LPIPS: dict[tuple[torch.dtype, str], RandomFeatureDistance] = {}


def lpips_style(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:class:`RandomFeatureDistance` with seed 0, cached per dtype/device."""
    key = (x.dtype, str(x.device))
    if key not in _DEFAULT_LPIPS:
        _DEFAULT_LPIPS[key] = RandomFeatureDistance(0).to(device=x.device, dtype=x.dtype)
    return _DEFAULT_LPIPS[key](x, y)
