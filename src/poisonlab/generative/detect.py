"""Detecting disguises (thesis chapter 5, Lu et al. ICML 2024, §"Detecting disguises").

Threat model: the defender (a data curator or a court-appointed auditor) holds the training set,
the latent model's autoencoder (E, D), and — for screening — the protected works. Each detector
returns one score per training image (higher = more suspicious), the same convention as poisonlab
defenses, so a threshold turns it into a filter.

- ``latent_screening`` (feature-space screening): a disguise is close to a protected work in latent
  space while far from it in pixel space. Score = max over protected works c of
  log(d_pix(x, c)) − log(d_lat(x, c)), with d_pix the RMS pixel distance and d_lat the RMS
  distance of scaled latents s·E(·) (posterior mode). Needs the protected works.
- ``reconstruction`` (encoder-decoder examination): a disguise's reveal D(E(x)) shows the hidden
  work, not x. Score = 1 − SSIM(x, D(E(x))) (``metric="lpips"``: the LPIPS-style random-feature
  distance of :mod:`.metrics`). Needs no protected works.

Shapes: x (N, C, H, W) and protected (M, C, H, W) in [0, 1]; scores (N,), on ``x``'s device (the
autoencoder runs on its own device; inputs are moved there batch by batch).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..registry import Registry
from .metrics import lpips_style, ssim
from .vae import LatentCodec

Detector = Callable[..., torch.Tensor]
DETECTORS: Registry[Detector] = Registry("disguise detector")


@torch.no_grad()
def _encode_batched(vae: LatentCodec, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([vae.encode(x[i : i + batch].to(vae.device, vae.dtype)) for i in range(0, len(x), batch)]) * vae.scaling_factor


@DETECTORS.register("latent_screening")
@torch.no_grad()
def latent_screening_scores(
    vae: LatentCodec, x: torch.Tensor, protected: torch.Tensor | None = None, *, batch: int = 256, eps: float = 1e-6
) -> torch.Tensor:
    """max_c [log d_pix(x, c) − log d_lat(x, c)] (N,); see the module docstring."""
    if protected is None or len(protected) == 0:
        raise ConfigError("latent screening needs at least one protected work")
    if protected.shape[1:] != x.shape[1:]:
        raise ConfigError(f"protected works {tuple(protected.shape[1:])} and images {tuple(x.shape[1:])} differ in shape")
    z = _encode_batched(vae, x, batch).flatten(1).to(x.device, torch.float64)
    zc = _encode_batched(vae, protected, batch).flatten(1).to(x.device, torch.float64)
    xp, cp = x.flatten(1).double(), protected.to(x.device).flatten(1).double()
    d_lat = torch.cdist(z, zc) / z.shape[1] ** 0.5
    d_pix = torch.cdist(xp, cp) / xp.shape[1] ** 0.5
    return (torch.log(d_pix + eps) - torch.log(d_lat + eps)).amax(1).float()


@DETECTORS.register("reconstruction")
@torch.no_grad()
def reconstruction_scores(
    vae: LatentCodec, x: torch.Tensor, protected: torch.Tensor | None = None, *, metric: str = "ssim", batch: int = 256
) -> torch.Tensor:
    """Perceptual distance between x and its reveal D(E(x)), (N,). ``protected`` is ignored."""
    if metric not in ("ssim", "lpips"):
        raise ConfigError(f"reconstruction metric must be 'ssim' or 'lpips', got {metric!r}")
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(vae.device, vae.dtype)
        rec = vae.reveal(xb)
        out.append(1.0 - ssim(xb, rec) if metric == "ssim" else lpips_style(xb, rec))
    return torch.cat(out).float().to(x.device) if out else torch.empty(0, device=x.device)


def detection_report(clean_scores: torch.Tensor, poison_scores: torch.Tensor, tpr: float = 0.95) -> dict[str, float]:
    """ROC-AUC of scores (poison = positive) and the false-positive rate on clean images at the
    lowest threshold that flags at least ``tpr`` of the poisons (``fpr_at_tpr``), and at the one
    that flags them all (``fpr_at_tpr1``). Ties count against the detector (a clean score equal
    to the threshold is a false positive)."""
    from sklearn.metrics import roc_auc_score

    c = clean_scores.detach().cpu().double().numpy()
    p = poison_scores.detach().cpu().double().numpy()
    if len(c) == 0 or len(p) == 0:
        raise ConfigError("detection report needs clean and poison scores")
    labels = np.r_[np.zeros(len(c)), np.ones(len(p))]
    auc = float(roc_auc_score(labels, np.r_[c, p]))
    ps = np.sort(p)[::-1]
    k = int(np.ceil(tpr * len(ps)))  # flag the k highest poison scores
    thr = ps[max(k, 1) - 1]
    return {
        "auc": auc,
        "fpr_at_tpr": float((c >= thr).mean()),
        "tpr_target": tpr,
        "fpr_at_tpr1": float((c >= ps[-1]).mean()),
        "n_clean": int(len(c)),
        "n_poison": int(len(p)),
    }
