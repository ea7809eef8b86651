"""kNN label sanitisation (Paudice, Muñoz-González & Lupu 2018, "Label sanitization against label
flipping poisoning attacks").

Threat model: label-flipping poisons sit among clean points of another class. For each point the
defender looks at its k nearest neighbours in input space (L2 on the flattened inputs, of any shape
and bounds, in the data's own units; the point itself excluded by index, so an exact duplicate with
a different label counts against it) and scores the fraction whose label differs:

    score_i = (1/k) Σ_{j ∈ kNN(i)} [y_j ≠ y_i]  +  (1/(2k)) · d̄_i / (1 + d̄_i)

The second term (d̄_i = mean distance to the k neighbours, < 1/(2k)) only breaks ties between
equal disagreement counts in favour of isolated points; it never changes the order of the first
term (d̄/(1 + d̄) < 1 for any scale of the data). Distances are computed in chunks of ``chunk_size``
rows ((chunk, N) at a time). The victim model is not used (any module; only its device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.types import Dataset
from ..training.victim import Victim
from ..validation import check_int
from .base import Defense, DefenseConfig, register_defense

#: unit roundoff of float32
_U32 = float(torch.finfo(torch.float32).eps) / 2
#: rows whose candidates' float64 differences are formed at once ((rows · m, D): about 7 MB for k = 10
#: on MNIST, small enough to stay in cache; 256 rows at once ran 9× slower, on fresh memory each time)
_REFINE_ROWS = 32


def knn_indices(x: torch.Tensor, k: int, chunk_size: int = 1024, progress: bool = False,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) indices and distances (float64, on CPU) of each row's k nearest other rows (self
    excluded), computed on ``device`` (the victim's: CUDA when present).

    Screened in float32 first (≈ 2–4× less arithmetic than float64): each row keeps its
    ``m = min(2k + 16, N − 1)`` nearest candidates by the float32 distances ‖a‖² − 2a·b + ‖b‖², whose
    error is at most e = 2(D + 4)·u₃₂·(‖a‖² + max‖b‖²) (D features, u₃₂ float32's unit roundoff;
    conversion, dot products and sums together; the bound holds whichever of the two rows' blocks
    computed the distance). The distance matrix is symmetric, so only the blocks on and above the
    diagonal are computed (half the products of a full pass): a chunk of rows against itself and
    every later row, whose block screens the chunk's rows along its columns and the later rows along
    its rows (each row's running m candidates merged with every block's). Then the candidates'
    float64 distances ‖a − b‖² (differences, no cancellation) pick the k. The screen is exact when
    the m-th float32 distance exceeds the k-th by more than 2e (nothing outside it can beat the k
    kept); a row where it does not — ties, near-duplicates at the boundary — gets its distances to
    every row in float64 (‖a‖² − 2a·b + ‖b‖²) instead.
    """
    flat = x.flatten(1).to(device, torch.float64)
    n, dim = flat.shape
    k = min(k, n - 1)
    m = min(2 * k + 16, n - 1)
    sq = (flat * flat).sum(1)
    flat32, sq32 = flat.float(), sq.float()
    err = 2.0 * (dim + 4) * _U32 * (sq + sq.max())  # (N,) the bound e of each row's float32 distances
    # every row's running screen: its m smallest float32 distances so far and their rows
    screen = torch.full((n, m), float("inf"), dtype=torch.float32, device=flat.device)
    cand = torch.zeros((n, m), dtype=torch.long, device=flat.device)

    def merge(rows: slice, d: torch.Tensor, i: torch.Tensor) -> None:
        both_d, both_i = torch.cat([screen[rows], d], 1), torch.cat([cand[rows], i], 1)
        screen[rows], j = torch.topk(both_d, m, dim=1, largest=False, sorted=True)
        cand[rows] = both_i.gather(1, j)

    starts = range(0, n, chunk_size)
    for start in tqdm(starts, desc="knn distances", disable=not progress, leave=False, unit="chunk"):
        stop = min(start + chunk_size, n)
        ar = torch.arange(stop - start, device=flat.device)
        # one (chunk, N − start) block: the chunk's rows against themselves and every later row
        d32 = torch.addmm(sq32[None, start:], flat32[start:stop], flat32[start:].T, alpha=-2.0).add_(sq32[start:stop, None])
        d32[ar, ar] = float("inf")
        d, i = torch.topk(d32, min(m, n - start), dim=1, largest=False, sorted=True)  # the chunk's rows
        merge(slice(start, stop), d, i + start)
        if stop < n:  # the later rows, screened by the block's transpose
            d, i = torch.topk(d32[:, stop - start :].T, min(m, stop - start), dim=1, largest=False, sorted=True)
            merge(slice(stop, n), d, i + start)
    idx_out, dist_out = [], []
    buf = flat.new_empty((_REFINE_ROWS * m, dim))  # one small block of candidates, reused: it stays in cache
    for start in starts:
        stop = min(start + chunk_size, n)
        rows, sq_rows, c = flat[start:stop], sq[start:stop], cand[start:stop]
        d2 = flat.new_empty((stop - start, m))
        for b in range(0, stop - start, _REFINE_ROWS):  # the candidates' float64 distances ‖a − b‖²
            e = min(b + _REFINE_ROWS, stop - start)
            diff = torch.index_select(flat, 0, c[b:e].reshape(-1), out=buf[: (e - b) * m]).view(e - b, m, dim)
            d2[b:e] = diff.sub_(rows[b:e, None]).mul_(diff).sum(2)
        d, j = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        i = c.gather(1, j)
        s = screen[start:stop]
        unsure = (s[:, m - 1].double() - s[:, k - 1].double() <= 2.0 * err[start:stop]) & (m < n - 1)
        if bool(unsure.any()):  # the screen cannot vouch for these rows: all N distances in float64
            u = unsure.nonzero().squeeze(1)
            full = (sq_rows[u, None] - 2.0 * rows[u] @ flat.T + sq[None, :]).clamp_min(0.0)
            full[torch.arange(len(u), device=flat.device), start + u] = float("inf")
            d[u], i[u] = torch.topk(full, k, dim=1, largest=False, sorted=True)
        idx_out.append(i.cpu())
        dist_out.append(d.sqrt().cpu())
    return torch.cat(idx_out), torch.cat(dist_out)


@dataclass(frozen=True, kw_only=True)
class KnnConfig(DefenseConfig):
    """Options of the kNN label-sanitisation defense (Paudice, Muñoz-González & Lupu 2018).

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points to remove, in [0, 1]. Default 0.03.
        k: Number of nearest neighbours (L2 in input space, the point itself excluded) whose labels
            are compared with the point's; a positive integer, capped at N − 1. The score's first
            term is the fraction of these k neighbours with another label, so it moves in steps of
            1/k. Default 10.
        chunk_size: Number of rows whose distances to all N points are computed at once (a
            (chunk_size, N) float64 block on the victim's device); a positive integer. Only memory
            and speed depend on it, not the scores. Default 1024.
    """

    k: int = 10
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.k, "k", "knn")
        check_int(self.chunk_size, "chunk_size", "knn")


@register_defense("knn")
class KnnDefense(Defense[KnnConfig]):
    summary = "remove points whose label disagrees with their k nearest neighbours (Paudice et al. 2018)"

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> torch.Tensor:
        c: KnnConfig = self.config
        if len(data) < 2:
            return torch.zeros(len(data), dtype=torch.float64, device="cpu")
        idx, dist = knn_indices(data.x, c.k, c.chunk_size, progress, victim.device)
        k = idx.shape[1]
        disagree = (data.y[idx] != data.y.unsqueeze(1)).double().mean(1)
        mean_d = dist.mean(1)
        return disagree + (mean_d / (1.0 + mean_d)) / (2.0 * k)
