"""Image grids of poisons beside their source images, with perturbation magnitudes."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.types import Dataset, PoisonSet


def _as_image(x: torch.Tensor):
    x = x.detach().cpu().float()
    if x.shape[0] == 1:
        return x[0].numpy(), "gray"
    return x.permute(1, 2, 0).numpy(), None


def poison_grid(path: str | Path, poisons: PoisonSet, train: Dataset, max_items: int = 8, title: str = "") -> dict[str, float]:
    """Save a PNG: row 1 source images, row 2 poisons, row 3 |poison − source| (per pixel).

    Returns the max and mean absolute pixel perturbation over all poisons with a source.
    """
    from .plots import pyplot

    plt = pyplot()
    n = min(max_items, len(poisons))
    has_src = poisons.source_index >= 0
    delta = torch.zeros(len(poisons))
    if has_src.any():
        diff = (poisons.x[has_src] - train.x[poisons.source_index[has_src]]).abs()
        stats = {"max_perturbation": float(diff.max()), "mean_perturbation": float(diff.mean())}
        delta[has_src] = diff.flatten(1).amax(1)
    else:
        stats = {"max_perturbation": float("nan"), "mean_perturbation": float("nan")}
    if n == 0:
        return stats
    h, w = poisons.x.shape[-2:]
    flat_input = h == 1  # 2-D toy points: nothing to draw as an image
    fig, axes = plt.subplots(3, n, figsize=(1.4 * n + 0.6, 4.6), squeeze=False)
    for j in range(n):
        s = int(poisons.source_index[j])
        cells = [
            (train.x[s] if s >= 0 else None, f"src y={int(train.y[s])}" if s >= 0 else "no source"),
            (poisons.x[j], f"poison y={int(poisons.y[j])}"),
            ((poisons.x[j] - train.x[s]).abs() if s >= 0 else None, f"|Δ|max {float(delta[j]):.2f}"),
        ]
        for i, (img, label) in enumerate(cells):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=7)
            if img is None or flat_input:
                continue
            arr, cmap = _as_image(img)
            ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.suptitle(
        (title + "\n" if title else "")
        + f"perturbation: max {stats['max_perturbation']:.3f}, mean {stats['mean_perturbation']:.4f} (pixel scale 0-1)",
        fontsize=8,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return stats
