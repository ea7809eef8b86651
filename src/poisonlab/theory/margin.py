"""Binary linear margin classifiers: the reachability threshold of Theorem 2 / Corollary 1.

Paper: Lu, Kamath & Yu, "Exploring the limits of model-targeted indiscriminate data poisoning
attacks", ICML 2023 (thesis §3.4.2). Threat model: the attacker *adds* a fraction ε of poisons to
the clean set μ and wants retraining to stop at a target w, i.e. (1−ρ)·g(μ) + ρ·g(ν) = 0 with
ρ = ε/(1+ε) (Definition 1).

For ℓ(x̃, w) = l(wᵀx̃) (the label absorbed in x̃ = y·x), ⟨w, ∇_w ℓ⟩ = t·l'(t) with t = wᵀx̃, so
along w every poisoning distribution contributes a value in [a, b], a = inf t·l'(t),
b = sup t·l'(t) over the admissible t. Hence (with ⟨w, g(μ)⟩ ≠ 0)

    w is ρ-reachable  ⇔  ρ > max{⟨w,g⟩/(⟨w,g⟩ − a), −⟨w,g⟩/(b − ⟨w,g⟩)}        (eq. 3.3)

(≥ when the maximum is attained). In ε-units the threshold is τ = max{⟨w,g⟩/(−a), −⟨w,g⟩/b, 0}.
The condition is necessary for every admissible input domain and also sufficient when the inputs
range over all of R^d (Theorem 2); with a bounded domain the orthogonal directions may add
constraints, so it is then only necessary.

Logistic loss: a = −W(1/e) ≈ −0.2785, b = ∞ on R, hence τ = max{⟨w,g(μ)⟩/W(1/e), 0} (eq. 3.4).
Exponential: a = −1/e. Hinge: a = −1. Least squares (label-dependent, Example 1): a = −∞, b = ∞,
reachable for every ε > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, cast

import torch

from .diagnostics import eps_of_rho
from .lambert import lambert_w

Interval = tuple[float, float]
#: (a, b, a attained, b attained) over one closed interval of margins
Extremes = tuple[float, float, bool, bool]


@dataclass(frozen=True)
class MarginLoss:
    """A decreasing margin loss l(t) by its statistic φ(t) = t·l'(t) and the extremes of φ."""

    name: str
    phi: Callable[[torch.Tensor], torch.Tensor]  # elementwise t·l'(t) (a subgradient choice at kinks)
    extremes: Callable[[float, float], Extremes]  # inf / sup of φ over [lo, hi] (± inf allowed)


def _unimodal_extremes(phi_scalar: Callable[[float], float], t_star: float) -> Callable[[float, float], Extremes]:
    """Extremes of φ decreasing on (−∞, t*], increasing on [t*, ∞), φ(−∞) = +∞, φ(+∞) = 0⁻."""

    def ext(lo: float, hi: float) -> Extremes:
        t_min = min(max(t_star, lo), hi)  # finite: clipping a finite t* into [lo, hi]
        a = phi_scalar(t_min)
        ends = []
        if math.isinf(lo):
            ends.append((math.inf, False))
        else:
            ends.append((phi_scalar(lo), True))
        if math.isinf(hi):
            ends.append((0.0, False))
        else:
            ends.append((phi_scalar(hi), True))
        b, b_att = max(ends, key=lambda e: (e[0], e[1]))
        return a, b, True, b_att

    return ext


def _logistic_phi_scalar(t: float) -> float:
    return -t / (1.0 + math.exp(t)) if t < 700 else -t * math.exp(-t)


def _hinge_extremes(lo: float, hi: float) -> Extremes:
    # φ(t) = −t for t < 1, 0 for t > 1, and t·[−1, 0] = [−1, 0] at the kink t = 1.
    if hi >= 1.0:
        a, a_att = (-1.0, True) if lo <= 1.0 else (0.0, True)
    else:
        a, a_att = -hi, not math.isinf(hi)
    cands: list[tuple[float, bool]] = []
    if lo < 1.0:
        cands.append((-lo, not math.isinf(lo)))
    if hi >= 1.0:
        cands.append((0.0, True))
    b, b_att = max(cands, key=lambda e: (e[0], e[1]))
    return a, b, a_att, b_att


_T_LOGISTIC = 1.0 + lambert_w(1.0 / math.e)

MARGIN_LOSSES: dict[str, MarginLoss] = {
    "logistic": MarginLoss(
        "logistic", lambda t: -t * torch.sigmoid(-t), _unimodal_extremes(_logistic_phi_scalar, _T_LOGISTIC)
    ),
    "exponential": MarginLoss(
        "exponential", lambda t: -t * torch.exp(-t), _unimodal_extremes(lambda t: -t * math.exp(-t), 1.0)
    ),
    "hinge": MarginLoss("hinge", lambda t: torch.where(t < 1, -t, torch.zeros_like(t)), _hinge_extremes),
}


def _loss(loss: str | MarginLoss) -> MarginLoss:
    if isinstance(loss, MarginLoss):
        return loss
    try:
        return MARGIN_LOSSES[loss]
    except KeyError:
        raise ValueError(f"unknown margin loss {loss!r}; known: {sorted(MARGIN_LOSSES)}") from None


def margin_extremes(loss: str | MarginLoss, domain: Sequence[Interval] | Interval = (-math.inf, math.inf)) -> Extremes:
    """(a, b, a attained, b attained): inf and sup of t·l'(t) over the admissible margins.

    ``domain`` is one interval (lo, hi) or a list of them (e.g. one per label when the inputs lie
    in a box: t = y·wᵀx ranges over a different interval for each y).
    """
    pairs: list[tuple[float, float]]
    if isinstance(domain[0], (int, float)):
        lo0, hi0 = cast("tuple[float, float]", domain)
        pairs = [(float(lo0), float(hi0))]
    else:
        pairs = [(float(d[0]), float(d[1])) for d in cast("Sequence[Interval]", domain)]
    lf = _loss(loss)
    a, b, a_att, b_att = math.inf, -math.inf, False, False
    for lo, hi in pairs:
        if not lo <= hi:
            raise ValueError(f"empty margin interval ({lo}, {hi})")
        ai, bi, ai_att, bi_att = lf.extremes(float(lo), float(hi))
        if ai < a or (ai == a and ai_att):
            a, a_att = ai, ai_att
        if bi > b or (bi == b and bi_att):
            b, b_att = bi, bi_att
    return a, b, a_att, b_att


def margin_statistic(margins: torch.Tensor, loss: str | MarginLoss = "logistic") -> float:
    """⟨w, g(μ)⟩ = E_μ t·l'(t) from the clean margins t_i = y_i·wᵀx_i (y_i ∈ {−1, +1}), shape (N,)."""
    return float(_loss(loss).phi(margins.double()).mean())


@dataclass(frozen=True)
class Reachability:
    """The answer of Theorem 2 for one target.

    ``tau`` is the threshold in ε-units (poisons per clean point); ``rho_min`` the same in
    ρ-units. ``attained``: the bound is reachable with equality (ε ≥ τ suffices); otherwise ε > τ is
    needed. ``exact``: the condition is necessary *and* sufficient (unbounded inputs); otherwise
    only necessary. ``degenerate``: ⟨w, g(μ)⟩ = 0, outside the theorem's hypothesis.
    """

    inner: float  # ⟨w, g(μ)⟩
    a: float
    b: float
    rho_min: float
    tau: float
    attained: bool
    exact: bool
    degenerate: bool = False

    def reachable(self, eps: float) -> bool:
        """Whether the poison fraction ``eps`` passes the condition (necessary; iff when ``exact``)."""
        if math.isinf(self.tau):
            return False
        return eps >= self.tau if self.attained else eps > self.tau


def reachability_from_extremes(inner: float, a: float, b: float, a_att: bool, b_att: bool, *, exact: bool) -> Reachability:
    """eq. 3.3 for given ⟨w, g(μ)⟩ and [a, b]; τ in ε-units is max{⟨w,g⟩/(−a), −⟨w,g⟩/b, 0}."""
    if inner == 0.0:
        return Reachability(inner, a, b, 0.0, 0.0, True, False, degenerate=True)
    if inner > 0:  # poisons must push ⟨w, g(ν)⟩ down to −(1−ρ)/ρ·⟨w, g(μ)⟩ ≥ a
        if a >= 0:
            return Reachability(inner, a, b, 1.0, math.inf, False, exact)
        rho = 0.0 if math.isinf(a) else inner / (inner - a)
        tau = 0.0 if math.isinf(a) else inner / (-a)
        return Reachability(inner, a, b, rho, tau, a_att and not math.isinf(a), exact)
    if b <= 0:
        return Reachability(inner, a, b, 1.0, math.inf, False, exact)
    rho = 0.0 if math.isinf(b) else -inner / (b - inner)
    tau = 0.0 if math.isinf(b) else -inner / b
    return Reachability(inner, a, b, rho, tau, b_att and not math.isinf(b), exact)


def binary_reachability(
    inner: float,
    loss: str | MarginLoss = "logistic",
    domain: Sequence[Interval] | Interval = (-math.inf, math.inf),
) -> Reachability:
    """Theorem 2 / Corollary 1 for ⟨w, g(μ)⟩ = ``inner`` (see :func:`margin_statistic`).

    ``domain``: the admissible margins t = wᵀx̃ (default R; for inputs in a box pass the
    interval(s) wᵀx̃ can take). Exact (iff) only for the unbounded default.
    """
    a, b, a_att, b_att = margin_extremes(loss, domain)
    exact = isinstance(domain[0], (int, float)) and math.isinf(domain[0]) and math.isinf(cast(Interval, domain)[1])
    r = reachability_from_extremes(float(inner), a, b, a_att, b_att, exact=exact)
    assert math.isinf(r.tau) or abs(eps_of_rho(r.rho_min) - r.tau) <= 1e-9 * max(1.0, r.tau)
    return r


def least_squares_reachability(inner: float) -> Reachability:
    """Least squares ℓ = ½(y − wᵀx)² (Example 1): t·l'(t, y) = t(t − y) spans (−∞, ∞) over (x, y),
    so a = −∞, b = ∞ and every ε > 0 reaches w (ρ > 0, not attained at ρ = 0)."""
    return reachability_from_extremes(float(inner), -math.inf, math.inf, False, False, exact=True)
