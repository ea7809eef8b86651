"""PNG in / out for the generative commands: float tensors (1, C, H, W) in [0, 1] via PIL, and a
labelled image grid (matplotlib, on its own figure: pyplot's state is never touched) for disguise
results.

Reading is split so that a command can check its input files before any expensive work:
:func:`open_image` opens and decodes a file (or raises :class:`~poisonlab.errors.DataError` with
one line naming it), :func:`image_tensor` converts the decoded image, and :func:`read_image` does
both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..figures import new_figure, save_figure

if TYPE_CHECKING:
    from PIL.Image import Image


def open_image(path: str | Path, what: str = "image") -> "Image":
    """Open and fully decode the image file ``path`` (``what`` names it in errors, e.g. "--base").

    Raises :class:`~poisonlab.errors.DataError` when the path is missing, not a file, unreadable,
    not an image PIL can decode (e.g. a text file named ``.png``), truncated, or empty (0 pixels).
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what}: image file {p} does not exist")
    if not p.is_file():
        raise DataError(f"{what}: {p} is not a file")
    try:
        with Image.open(p) as img:
            img.load()
            loaded = img.copy()
    except UnidentifiedImageError:
        raise DataError(f"{what}: {p} is not an image file PIL can read (PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError) as exc:  # unreadable, truncated or corrupt
        raise DataError(f"{what}: cannot read image {p}: {exc}") from None
    if loaded.width < 1 or loaded.height < 1:
        raise DataError(f"{what}: image {p} has no pixels ({loaded.width}x{loaded.height})")
    return loaded


def image_tensor(img: "Image", *, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """A decoded image as (1, C, H, W) float32 in [0, 1]; C = 1 (grey) or 3 (colour, alpha dropped).
    ``size`` resizes to size x size (bicubic); ``channels`` forces grey (1) or RGB (3)."""
    from PIL import Image

    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ConfigError(f"image size must be a positive integer, got {size!r}")
    mode = {1: "L", 3: "RGB"}.get(channels or 0) or ("L" if img.mode in ("L", "1", "I;16", "I") else "RGB")
    img = img.convert(mode)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.copy())
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t[None]


def read_image(path: str | Path, *, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Read an image file as (1, C, H, W) float32 in [0, 1] (:func:`open_image` + :func:`image_tensor`)."""
    return image_tensor(open_image(path), size=size, channels=channels)


def write_image(path: str | Path, x: torch.Tensor) -> Path:
    """Write one image (C, H, W) or (1, C, H, W) in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    x = x.detach().cpu().float()
    if x.ndim == 4:
        x = x[0]
    arr = (x.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(p)
    return p


def image_grid(path: str | Path, rows: Sequence[tuple[str, torch.Tensor]],
               captions: Sequence[Sequence[str] | None] | None = None, title: str = "", cell: float | None = None) -> Path:
    """A PNG grid: one row per (name, images (N, C, H, W)), N columns; optional per-cell captions;
    ``cell``: inches per image (default a thumbnail size). Drawn on its own figure
    (:func:`poisonlab.figures.new_figure`): pyplot is never used."""
    n = max(len(t) for _, t in rows)
    size = (1.3 * n + 1.0, 1.45 * len(rows) + 0.4) if cell is None else (cell * n + 0.8, cell * len(rows) + 0.5)
    fig, axes = new_figure(len(rows), n, figsize=size, squeeze=False)
    for i, (name, imgs) in enumerate(rows):
        row_captions = captions[i] if captions is not None else None
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
                ax.imshow(img[0].cpu().numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            if row_captions and j < len(row_captions) and row_captions[j]:
                ax.set_title(row_captions[j], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    return save_figure(fig, path, dpi=110)
