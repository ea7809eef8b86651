"""Real photographs that ship inside installed wheels (no downloads): scikit-learn's two sample
images and the photographs bundled in scikit-image's ``skimage.data`` (``pip install
'poisonlab[pretrained]'`` for scikit-image).

Every image is a float tensor (3, H, W) in [0, 1]; grey photographs are repeated to three channels.
Licences (from the packages' own notes): sklearn ``china`` / ``flower``: CC BY 2.0
(danielbuechele / vultilion on Flickr); skimage ``astronaut``, ``rocket``, ``hubble_deep_field``:
public domain (NASA); ``chelsea``, ``clock``: CC0 / public domain (Stefan van der Walt);
``coffee``: courtesy of Pikolo Espresso Bar (CC0); the others: see ``skimage.data``'s docstrings.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

#: colour photographs of scenes and objects, by source
SKLEARN_PHOTOS = ("china", "flower")
SKIMAGE_COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
                  "hubble_deep_field", "retina", "immunohistochemistry")
SKIMAGE_GREY = ("camera", "moon", "coins", "brick", "grass", "gravel", "clock")


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.array(a, dtype=np.float32)) / 255.0
    if t.ndim == 2:
        t = t[None].expand(3, -1, -1)
    else:
        t = t[..., :3].permute(2, 0, 1)
    return t.contiguous()


def sklearn_photos() -> dict[str, torch.Tensor]:
    """scikit-learn's ``load_sample_images``: china, flower, each (3, 427, 640)."""
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    names = [n.rsplit("/", 1)[-1].rsplit(".", 1)[0] for n in data.filenames]
    return {n: _to_tensor(a) for n, a in zip(names, data.images)}


def skimage_photos(names: tuple[str, ...] = SKIMAGE_COLOUR + SKIMAGE_GREY) -> dict[str, torch.Tensor]:
    """Photographs from ``skimage.data`` that the wheel bundles (no download); needs scikit-image."""
    try:
        import skimage.data as sd
    except ImportError:
        raise DataError("the scikit-image photographs need scikit-image: pip install scikit-image "
                        "(or pip install 'poisonlab[pretrained]')") from None
    out = {}
    for n in names:
        if n in ("motorcycle_left", "motorcycle_right"):
            left, right, _ = sd.stereo_motorcycle()
            a = left if n.endswith("left") else right
        else:
            a = getattr(sd, n)()
        out[n] = _to_tensor(a)
    return out


def all_photos(include_skimage: bool = True) -> dict[str, torch.Tensor]:
    """sklearn's photographs, then scikit-image's (colour, then grey)."""
    out = sklearn_photos()
    if include_skimage:
        out.update(skimage_photos())
    return out


def square(x: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Resize (3, H, W) so the short side is ``size`` (bicubic, antialiased), then centre-crop to
    (3, size, size): the whole scene, as a disguise base or a copyrighted work."""
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    y = F.interpolate(x[None], size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return y[:, top:top + size, left:left + size].contiguous()


def crops(x: torch.Tensor, size: int = 256, max_crops: int | None = None) -> list[torch.Tensor]:
    """Non-overlapping (3, size, size) crops at native resolution on a grid, row-major, at most
    ``max_crops`` (spread evenly over the grid when there are more)."""
    h, w = x.shape[-2:]
    ny, nx = h // size, w // size
    cells = [(i, j) for i in range(ny) for j in range(nx)]
    if max_crops is not None and len(cells) > max_crops:
        idx = np.linspace(0, len(cells) - 1, max_crops).round().astype(int)
        cells = [cells[k] for k in idx]
    oy, ox = (h - ny * size) // 2, (w - nx * size) // 2
    return [x[:, oy + i * size:oy + (i + 1) * size, ox + j * size:ox + (j + 1) * size].contiguous() for i, j in cells]
