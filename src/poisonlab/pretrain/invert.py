"""Feature inversion: find inputs x whose features φ(x) match given target features (stage c of the
feature-targeted attack, thesis chapter 4).

    min_x  Σ_i ||φ(x_i) − t_i||²   s.t.  x_i ∈ bounds  and, optionally,  ||x_i − s_i||_∞ ≤ r

solved by projected Adam on the inputs, starting from ``init`` (usually the source inputs s). The
box is the data's :class:`~poisonlab.data.bounds.Bounds` (default the pixel box [0, 1]); the
projection is :meth:`Bounds.project_linf`, and ``r`` is in the data's units.
Points are independent (the objective is a sum), so a batch is solved jointly.
Shapes: init / source (n, *input_shape) — images (n, C, H, W) or features (n, d); targets (n, D);
φ maps (n, *input_shape) -> (n, D).
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from ..data.bounds import Bounds

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def invert_features(feature_map: FeatureMap, targets: torch.Tensor, init: torch.Tensor, *,
                    source: torch.Tensor | None = None, radius: float | None = None, steps: int = 200,
                    lr: float = 0.02, batch_size: int = 512, progress: bool | str = False,
                    bounds: Bounds | None = None) -> tuple[torch.Tensor, dict]:
    """Inputs shaped like ``init``, inside ``bounds`` (default [0, 1]), whose features approach
    ``targets``, and a report with the relative feature error ||φ(x) − t|| / ||t|| per point
    (mean / max, before and after)."""
    if radius is not None and source is None:
        raise ValueError("a radius needs the source inputs")
    box = bounds if bounds is not None else Bounds.unit()
    targets = targets.detach()
    out = torch.empty_like(init)
    before, after = [], []
    bar = tqdm(total=steps * ((len(init) + batch_size - 1) // batch_size), desc=progress if isinstance(progress, str) else "invert",
               disable=not progress, leave=False)
    for start in range(0, len(init), batch_size):
        sl = slice(start, start + batch_size)
        src = source[sl] if source is not None else None
        t = targets[sl]
        x = box.project_linf(init[sl].detach().clone(), src, radius if src is not None else None).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        with torch.no_grad():
            before.append(relative_error(feature_map(x), t))
        for _ in range(steps):
            loss = (feature_map(x) - t).pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(box.project_linf(x, src, radius if src is not None else None))
            bar.update(1)
        with torch.no_grad():
            after.append(relative_error(feature_map(x), t))
        out[sl] = x.detach()
    bar.close()
    b, a = torch.cat(before), torch.cat(after)
    report = {"feature_rel_error_initial_mean": b.mean().item(), "feature_rel_error_mean": a.mean().item(),
              "feature_rel_error_max": a.max().item(), "inversion_steps": steps}
    return out, report


def relative_error(f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """||f_i − t_i|| / max(||t_i||, 1e-12), shape (n,)."""
    return (f - t).norm(dim=1) / t.norm(dim=1).clamp_min(1e-12)
