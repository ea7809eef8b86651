"""Sever (Diakonikolas, Kamath, Kane, Li, Steinhardt & Stewart 2019, "Sever: a robust meta-algorithm
for stochastic optimization"; thesis Table 2.11).

Threat model: the defender trains on D, computes every point's loss gradient g_i = ∇_w ℓ(z_i, ŵ)
(P parameters; ``params="head"`` by default: the last linear layer, i.e. all of ``lr``), centres
them, and scores each point by the squared projection on the top right singular vector v of the
centred gradient matrix G_c = G − 1ĝᵀ (N, P):

    τ_i = ((g_i − ĝ)ᵀ v)²

Poisons that push the model in a common direction dominate that singular direction. Removal runs
in ``rounds``: each round removes its share of the budget (``poison_count(fraction, N)`` split as
evenly as possible, earlier rounds take the remainder), then the victim is retrained on what is
left and the scores recomputed. The returned scores rank every removed point above every kept one
(points removed in an earlier round above later ones; within a round by τ), so the shared filter
removes exactly the Sever set. With ``rounds=1`` the scores are τ itself. Per-sample gradients are
vectorised with ``torch.func.vmap``.

Models. ``params="head"`` uses the victim's classification head (for a user's module the last
``nn.Linear``; see :mod:`poisonlab.defenses._grads`): on its frozen input features when the logits
are exactly head(features), else through the whole network with only the head free.
``params="all"`` differentiates every trainable parameter of any ``nn.Module``. Inputs of any shape
and bounds. Unsupported (:class:`~poisonlab.errors.UnsupportedError`, checked on a freshly built
victim before any training): ``params="head"`` without such a head, or a model whose per-sample
gradients ``torch.func.vmap`` cannot compute (e.g. data-dependent Python control flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.splits import poison_count
from ..data.types import Dataset
from ..errors import ConfigError, UnsupportedError
from ..training.victim import Victim
from ..validation import check_int
from ._grads import head_inputs, param_names, per_sample_grads, probe_head, top_right_singular_vector
from .base import Defense, DefenseConfig, register_defense


def sever_scores(grads: torch.Tensor, *, method: str = "auto", generator: torch.Generator | None = None) -> torch.Tensor:
    """τ_i = ((g_i − ĝ)ᵀ v)² for a gradient matrix (N, P), v the top right singular vector of the centred matrix."""
    centred = grads - grads.mean(0, keepdim=True)
    v = top_right_singular_vector(centred, method=method, generator=generator)
    return (centred @ v) ** 2


def round_sizes(total: int, rounds: int) -> list[int]:
    """Split ``total`` removals over ``rounds`` as evenly as possible (earlier rounds take the remainder)."""
    base, extra = divmod(total, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def _gradients(model: nn.Module, data: Dataset, c: "SeverConfig") -> torch.Tensor:
    """(n, P) per-sample gradients of the parameters ``c.params`` asks for."""
    fast = head_inputs(model, data.x) if c.params == "head" else None
    if fast is not None:  # logits = head(features): per-sample gradients of the head on frozen features
        head, feats = fast
        names = [n for n, p in head.named_parameters() if p.requires_grad]
        return per_sample_grads(head, names, feats, data.y, chunk_size=c.chunk_size)
    return per_sample_grads(model, param_names(model, c.params), data.x, data.y, chunk_size=c.chunk_size)


@dataclass(frozen=True, kw_only=True)
class SeverConfig(DefenseConfig):
    """Options of Sever (Diakonikolas, Kamath, Kane, Li, Steinhardt & Stewart 2019).

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points removed in all rounds together, in [0, 1]. Default 0.03.
        params: Which parameters the per-sample loss gradients g_i are taken with respect to:
            "head" (default) — the victim's classification head (its last ``nn.Linear``; all of
            ``lr``); "all" — every trainable parameter (any ``nn.Module``; P is the model size).
        rounds: Number of remove-and-retrain rounds; the budget ``poison_count(fraction, N)`` is
            split over them as evenly as possible and the victim is retrained on what is kept
            before each later round. A positive integer; 1 scores once with τ itself. Default 2.
        svd: How the top right singular vector of the centred gradient matrix is computed:
            "exact", "randomized" or "auto" (default), as in
            :class:`~poisonlab.defenses.spectral.SpectralConfig`.
        chunk_size: Number of points whose per-sample gradients are computed at once (by
            ``torch.func.vmap``); a positive integer. Only memory and speed depend on it.
            Default 1024.
    """

    params: str = "head"  # "head" (last linear layer) or "all"
    rounds: int = 2
    svd: str = "auto"  # "auto", "exact" or "randomized"
    chunk_size: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.params not in ("head", "all"):
            raise ConfigError(f"sever: params must be 'head' or 'all', got {self.params!r}")
        if self.svd not in ("auto", "exact", "randomized"):
            raise ConfigError(f"sever: svd must be 'auto', 'exact' or 'randomized', got {self.svd!r}")
        check_int(self.rounds, "rounds", "sever")
        check_int(self.chunk_size, "chunk_size", "sever")


@register_defense("sever")
class SeverDefense(Defense[SeverConfig]):
    summary = ("remove points with large squared projection of centred gradients on the top singular vector, in rounds "
               "(Diakonikolas et al. 2019)")

    def check_supported(self, data: Dataset, victim: Victim) -> None:
        c: SeverConfig = self.config
        if c.params == "head":
            fresh = probe_head(victim, data, "sever with params='head'", hint="use params='all'")
        else:
            fresh = victim.spec.build(victim.seed)
        try:  # the per-sample gradients of two points, by the path _score takes
            _gradients(fresh, data.subset(torch.arange(min(2, len(data)), device="cpu")), c)
        except UnsupportedError:
            raise
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
            raise UnsupportedError(f"sever: cannot compute per-sample gradients of {type(fresh).__name__} with "
                                   f"torch.func.vmap ({type(exc).__name__}: {exc})") from None

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        c: SeverConfig = self.config
        n = len(data)
        sizes = [k for k in round_sizes(poison_count(c.fraction, n), c.rounds) if k] or [0]
        active = torch.arange(n, device="cpu")  # indexes the (CPU) dataset
        removed_in: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, τ) removed per round
        last_scores = torch.zeros(0, dtype=torch.float64, device="cpu")
        current = model
        for r, k in enumerate(sizes):
            sub = data.subset(active)
            trained = self.trained_model(sub, victim, current, progress)
            g = _gradients(trained, sub, c)
            tau = sever_scores(g, method=c.svd, generator=generator).double()
            order = torch.sort(tau, descending=True, stable=True).indices
            is_last = r == len(sizes) - 1
            if is_last:
                last_scores = tau
                break
            removed_in.append((active[order[:k]], tau[order[:k]]))
            active = active[order[k:]].sort().values
            current = None  # retrain on what is kept
        # compose: last-round scores for the survivors, earlier rounds stacked above them
        out = torch.zeros(n, dtype=torch.float64, device="cpu")
        out[active] = last_scores.cpu()
        floor = float(last_scores.max()) if len(last_scores) else 0.0
        for idx, tau in reversed(removed_in):
            if len(idx) == 0:
                continue
            shifted = tau - tau.min() + floor + 1.0
            out[idx] = shifted
            floor = float(shifted.max())
        return out, {"rounds": len(sizes), "removed_per_round": sizes}
