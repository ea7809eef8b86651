"""SSIM / MS-SSIM / LPIPS-style distance: brute-force reference and metric properties (float64)."""

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.generative.metrics import RandomFeatureDistance, gaussian_window, lpips_style, ms_ssim, ssim


def _rand(shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ssim_brute(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Loops over every valid window position and channel (x, y: (C, H, W))."""
    c1, c2 = 0.01**2, 0.03**2
    k = w.shape[0]
    vals = []
    for ch in range(x.shape[0]):
        for i in range(x.shape[1] - k + 1):
            for j in range(x.shape[2] - k + 1):
                a, b = x[ch, i : i + k, j : j + k], y[ch, i : i + k, j : j + k]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
                cov = (w * (a - ma) * (b - mb)).sum()
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_brute_force():
    x, y = _rand((2, 3, 10, 9), 0), _rand((2, 3, 10, 9), 1)
    y = 0.6 * x + 0.4 * y  # correlated pair: SSIM well away from 0
    w = gaussian_window(5, 1.5, torch.float64).numpy()
    got = ssim(x, y, window_size=5)
    for n in range(2):
        assert got[n].item() == pytest.approx(_ssim_brute(x[n].numpy(), y[n].numpy(), w), abs=1e-12)


def test_ssim_properties():
    x, y = _rand((3, 1, 16, 16), 2), _rand((3, 1, 16, 16), 3)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-14)
    assert (ssim(x, y).abs() <= 1).all()
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    vals = [ssim(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.01, 0.05, 0.2, 0.5)]
    assert all(a > b for a, b in zip(vals, vals[1:])), vals


def test_ms_ssim_properties_and_single_scale():
    x, y = _rand((2, 3, 32, 32), 5), _rand((2, 3, 32, 32), 6)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ms_ssim(x, y), ms_ssim(y, x), atol=1e-14)
    # one scale with weight 1 is plain SSIM (clipped at 0)
    z = (0.7 * x + 0.3 * y)
    assert torch.allclose(ms_ssim(x, z, scales=1), ssim(x, z).clamp_min(0), atol=1e-14)
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    vals = [ms_ssim(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.01, 0.05, 0.2)]
    assert vals[0] > vals[1] > vals[2]
    with pytest.raises(ConfigError):
        ms_ssim(x[..., :20, :20], y[..., :20, :20], scales=3)  # 20 < 7 * 4
    with pytest.raises(ConfigError):
        ssim(x, y[:1])


def test_ms_ssim_gradient_matches_finite_differences():
    x = _rand((1, 1, 28, 28), 8)
    y = (0.5 * x + 0.5 * _rand((1, 1, 28, 28), 9)).requires_grad_(True)
    f = lambda t: ms_ssim(x, t, scales=2).sum()  # noqa: E731
    (g,) = torch.autograd.grad(f(y), y)
    d = _rand((1, 1, 28, 28), 10) - 0.5
    h = 1e-6
    fd = (f(y + h * d) - f(y - h * d)) / (2 * h)
    assert (g * d).sum().item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)


def test_lpips_style_properties():
    x, y = _rand((3, 3, 16, 16), 11), _rand((3, 3, 16, 16), 12)
    d = lpips_style(x, y)
    assert d.shape == (3,) and (d > 0).all()
    assert torch.allclose(lpips_style(x, x), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(d, lpips_style(y, x), atol=1e-12)
    # deterministic: a fresh network with the same seed gives the same distance
    other = RandomFeatureDistance(0).double()
    assert torch.allclose(other(x, y), d, atol=1e-12)
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    vals = [lpips_style(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.01, 0.05, 0.2)]
    assert vals[0] < vals[1] < vals[2]
    grey = x[:, :1]
    assert torch.allclose(lpips_style(grey, grey.flip(-1)), lpips_style(grey.expand(-1, 3, -1, -1), grey.flip(-1).expand(-1, 3, -1, -1)))


def test_generative_needs_diffusers_only_when_used(monkeypatch, capsys):
    """The core package and the CLI import without diffusers; using the VAE then says what to install."""
    import sys

    from poisonlab.cli.main import main

    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    assert main(["disguise", "--copyrighted", "a.png", "--base", "b.png", "--vae", "tiny:cifar10"]) == 2
    assert "poisonlab[diffusion]" in capsys.readouterr().err
