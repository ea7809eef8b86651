"""PNG in / out for the generative commands: float tensors (1, C, H, W) in [0, 1] via PIL, and a
labelled image grid (matplotlib) for disguise results."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError


def read_image(path: str | Path, *, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Read an image file as (1, C, H, W) float32 in [0, 1]; C = 1 (grey) or 3 (colour, alpha dropped).
    ``size`` resizes to size x size (bicubic); ``channels`` forces grey (1) or RGB (3)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"image {p} does not exist")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {p}: {exc}") from None
    mode = {1: "L", 3: "RGB"}.get(channels or 0) or ("L" if img.mode in ("L", "1", "I;16", "I") else "RGB")
    img = img.convert(mode)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t[None]


def write_image(path: str | Path, x: torch.Tensor) -> Path:
    """Write one image (C, H, W) or (1, C, H, W) in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    x = x.detach().cpu().float()
    if x.ndim == 4:
        x = x[0]
    arr = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(p)
    return p


def image_grid(path: str | Path, rows: Sequence[tuple[str, torch.Tensor]], captions: Sequence[Sequence[str]] | None = None, title: str = "") -> Path:
    """A PNG grid: one row per (name, images (N, C, H, W)), N columns; optional per-cell captions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(t) for _, t in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n + 1.0, 1.45 * len(rows) + 0.4), squeeze=False)
    for i, (name, imgs) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
            if j >= len(imgs):
                ax.axis("off")
                continue
            img = imgs[j].detach().cpu().float().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            if captions is not None and captions[i] and j < len(captions[i]) and captions[i][j]:
                ax.set_title(captions[i][j], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
