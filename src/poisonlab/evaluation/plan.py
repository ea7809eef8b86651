"""What an evaluation runs: which attacks and defenses apply, what each costs, what fits the budget.

* :func:`applicable` — every requested attack / defense checked by its own ``check_supported`` on
  the data and the victim (no training); the ones that do not apply are kept with the reason.
* Pricing — an attack is timed with its work cut to :data:`PROBE_OPTIONS` (one epoch, ten steps, …)
  on the real data and clean victim (:class:`~.cells.ProbeCell`): once cold, once warm, and warm
  at twice the iterations. The difference of the warm runs is the cost per iteration (:func:`work`
  counts them), the cold run the set-up (a target model, a pretrained generator, an ensemble), so
  the full cost is cold + per-iteration × the iterations left (:func:`estimate`). An attack
  without an iteration knob is probed once, in full.
* :func:`defense_trainings` — a defense cell's cost in trainings of the victim
  (:data:`DEFENSE_TRAININGS`); the defenses are budgeted cheapest first with it.
* :func:`budget_plan` — cheapest first, each attack over all seeds costs its estimate plus one
  retrain per seed; what does not fit is shortened (its iteration count scaled down to fit, never
  below the probe's) or skipped. Every decision is a :class:`Decision` with its reason, written
  into the report. The plan reads only recorded numbers (the probes' rows), so a resumed
  evaluation makes the same plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

from ..attacks import build_attack
from ..defenses import build_defense
from ..errors import PoisonlabError, UnsupportedError

#: each attack's work cut to a few iterations for its price
PROBE_OPTIONS: dict[str, dict[str, Any]] = {
    "tgda": {"epochs": 1, "selection.every": 0},
    "back_gradient": {"epochs": 1},
    "metapoison": {"outer_steps": 1},
    "min_max": {"epochs": 1},
    "gradient_matching": {"steps": 10, "restarts": 1},
    "gc": {"steps": 10},
    "feature_targeted": {"gc_steps": 10},
    "unlearnable": {"rounds": 1},
}
#: the options an attack's cost grows with (their product is its iteration count); the first is
#: the one a budget shortens
WORK_KEYS: dict[str, tuple[str, ...]] = {
    "min_max": ("epochs",),
    "back_gradient": ("epochs", "k"),
    "metapoison": ("outer_steps", "ensemble"),
    "tgda": ("epochs",),
    "gc": ("steps",),
    "gradient_matching": ("steps", "restarts"),
    "feature_targeted": ("gc_steps",),
    "unlearnable": ("rounds",),
}
#: a defense cell's cost in trainings of the victim, beyond the victim trained on D_tr ∪ D_p (that
#: one comes from the cache the attack cell filled): the retrain on the kept points plus the
#: scoring. Measured as the ratio of each defense's mean cell seconds to the loss filter's (1.5) in
#: one full MNIST LR evaluation, 3 seeds, 2 workers (docs/guide/evaluate.md; kNN: after f4b24c5). MaxUp trains on m noisy
#: copies of every batch (its noise draw dominates on a small victim), Sever retrains and re-scores
#: once per round, kNN's pairwise distances grow with N² rather than with a training.
DEFENSE_TRAININGS: dict[str, Any] = {
    "loss": 1.5,
    "slab": 2.0,
    "sphere": 2.3,
    "spectral": 2.8,
    "art_activation": 2.9,
    "influence": 3.6,
    "art_spectral": 4.7,
    "sever": lambda o: 1.5 + 3.0 * float(o.get("rounds", 2)),
    "knn": 8.9,
    "maxup": lambda o: 1.5 + 4.0 * float(o.get("m", 4)),
}
#: the cost of a defense the table does not list, in trainings
DEFAULT_DEFENSE_TRAININGS = 2.0
#: an attack cell's cost at its default options in the same unit (a loss-filter cell is 1.5), from the
#: same MNIST LR evaluation; only the order of cells without a time budget reads it (dearest first,
#: so that parallel lanes finish together: :func:`attack_trainings`); a budget uses the probes instead
ATTACK_TRAININGS: dict[str, float] = {
    "tgda": 113.0,
    "back_gradient": 19.0,
    "metapoison": 12.7,
    "gradient_matching": 6.1,
    "i_min_max": 4.0,
    "label_flip": 3.7,
    "gc": 3.0,
    "min_max": 2.5,
}
#: the share of a time budget kept for the defenses (when any applies); what the attacks leave
#: unused goes to the defenses too
DEFENSE_SHARE = 0.25


@dataclass(frozen=True)
class Choice:
    """One row of the evaluation: ``name`` (its label), the registered ``component`` and its options."""

    name: str
    component: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the plan does with one attack or defense, and why.

    ``action``: ``"run"``, ``"shorten"`` (run with ``options``), ``"skip"`` or ``"not applicable"``.
    """

    subject: str
    kind: str  # "attack" or "defense"
    action: str
    reason: str
    expected_seconds: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "kind": self.kind, "action": self.action, "reason": self.reason,
                "expected_seconds": self.expected_seconds, "options": self.options}


def applicable(choices: Iterable[Choice], kind: str, check: Any) -> tuple[list[Choice], list[Decision]]:
    """Split ``choices`` by ``check(component_object)`` (which raises UnsupportedError): those that
    apply, and a "not applicable" decision (with the component's reason) for the others."""
    ok, out = [], []
    for c in choices:
        obj = (build_attack if kind == "attack" else build_defense)(c.component, c.options)
        try:
            check(obj)
        except UnsupportedError as exc:
            out.append(Decision(c.name, kind, "not applicable", str(exc)))
            continue
        except PoisonlabError as exc:  # e.g. an optional dependency missing
            out.append(Decision(c.name, kind, "not applicable", f"{type(exc).__name__}: {exc}"))
            continue
        ok.append(c)
    return ok, out


def _flat(attack: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The attack's top-level options as it will run them (the work knobs are all top-level fields;
    an option left null that the config resolves itself, e.g. gc's ``steps``, as resolved)."""
    config = build_attack(attack, dict(options)).config
    out = {f.name: getattr(config, f.name) for f in fields(config)}
    resolve = getattr(config, "settings", None)
    if callable(resolve):
        out.update({k: v for k, v in resolve()._asdict().items() if out.get(k) is None})
    return out


def work(attack: str, options: Mapping[str, Any]) -> float:
    """The attack's iteration count under ``options`` (its full options: defaults filled in)."""
    o = _flat(attack, options)
    n = 1.0
    for k in WORK_KEYS.get(attack, ()):
        n *= float(o.get(k, 1) or 1)
    return n


def probe_options(attack: str, options: Mapping[str, Any], scale: int = 1) -> dict[str, Any]:
    """``options`` with the attack's work cut to the probe's (unchanged for attacks without a knob);
    ``scale``: the probe's first work knob times ``scale``."""
    out = {**dict(options), **PROBE_OPTIONS.get(attack, {})}
    if scale != 1 and attack in WORK_KEYS:
        key = WORK_KEYS[attack][0]
        out[key] = _flat(attack, out)[key] * scale
    return out


def estimate(attack: str, options: Mapping[str, Any], seconds: Sequence[float]) -> tuple[float, float | None]:
    """(estimated seconds at ``options``, seconds per iteration) from a probe's timings: ``[full]``
    for an attack without a knob, else ``[cold, warm, warm at twice the iterations]``."""
    if len(seconds) == 1 or attack not in WORK_KEYS:
        return float(seconds[0]), None
    cold, warm, warm2 = (float(t) for t in seconds[:3])
    w_full, w1, w2 = work(attack, options), work(attack, probe_options(attack, options)), \
        work(attack, probe_options(attack, options, 2))
    # a difference lost in the timing noise (warm ×2 no slower than warm): the probe's time is set-up
    # (e.g. MetaPoison's staggered ensemble, re-done per run) and the iterations cost ~nothing
    per = max(warm2 - warm, 0.0) / (w2 - w1) if w2 > w1 else 0.0
    return cold + per * max(w_full - w1, 0.0), per


def shortened(attack: str, options: Mapping[str, Any], factor: float) -> dict[str, Any] | None:
    """``options`` with the first work knob scaled by ``factor`` < 1 (rounded down), or None when
    the attack has no knob or the result would be below the probe's value."""
    keys = WORK_KEYS.get(attack)
    if not keys:
        return None
    key = keys[0]
    full = _flat(attack, options).get(key)
    floor = _flat(attack, probe_options(attack, options)).get(key)
    if not isinstance(full, int) or not isinstance(floor, int):
        return None
    value = int(math.floor(full * factor))
    if value < max(floor, 1) or value >= full:
        return None
    return {**dict(options), key: value}


def makespan(seconds: Iterable[float], lanes: int) -> float:
    """Wall seconds of cells taking ``seconds`` (in this order) on ``lanes`` workers that each take the
    next cell when free (a sweep's local / Ray pool): a lane left idle at the end of a phase counts,
    which a sum divided by ``lanes`` would not. One lane: the sum."""
    free = [0.0] * max(1, int(lanes))
    for s in seconds:
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += float(s)
    return max(free)


def budget_plan(priced: list[tuple[Choice, float]], *, train_seconds: float, n_seeds: int, budget: float,
                spent: float) -> list[Decision]:
    """Cheapest first: run each attack (over ``n_seeds`` seeds, plus one retrain each) while it fits
    in ``budget − spent`` (worker-seconds: the wall budget times the cells that run at once); shorten
    the first that does not fit, skip the rest. ``priced``: each
    attack with its estimated attack seconds at its options."""
    left = budget - spent - n_seeds * train_seconds  # the clean pretrain of each seed
    out = []
    for choice, seconds in sorted(priced, key=lambda p: (p[1], p[0].name)):
        cost = n_seeds * (seconds + train_seconds)
        if cost <= left:
            out.append(Decision(choice.name, "attack", "run", f"≈ {cost:.0f} s over {n_seeds} seed(s) fits "
                                f"(≈ {left:.0f} s of the budget left)", cost, dict(choice.options)))
            left -= cost
            continue
        room = left / n_seeds - train_seconds  # attack seconds per seed that would fit
        opts = shortened(choice.component, choice.options, room / seconds) if room > 0 and seconds > 0 else None
        if opts is not None:
            key = WORK_KEYS[choice.component][0]
            full = _flat(choice.component, choice.options)[key]
            factor = opts[key] / full
            cost_short = n_seeds * (seconds * factor + train_seconds)
            out.append(Decision(choice.name, "attack", "shorten",
                                f"the full attack would take ≈ {cost:.0f} s, ≈ {max(left, 0):.0f} s left: {key} "
                                f"{full} → {opts[key]}", cost_short, opts))
            left -= cost_short
            continue
        out.append(Decision(choice.name, "attack", "skip", f"would take ≈ {cost:.0f} s over {n_seeds} seed(s), "
                            f"≈ {max(left, 0):.0f} s of the budget left" + ("" if WORK_KEYS.get(choice.component)
                                                                          else " (no iteration count to shorten)"),
                            cost, dict(choice.options)))
    return out


def attack_trainings(attack: str, options: Mapping[str, Any]) -> float:
    """The cost prior of one cell of ``attack`` with ``options``, in trainings of the victim:
    :data:`ATTACK_TRAININGS` (:data:`DEFAULT_DEFENSE_TRAININGS` for an attack it does not list) times
    the attack's iterations relative to its defaults (:func:`work`)."""
    return ATTACK_TRAININGS.get(attack, DEFAULT_DEFENSE_TRAININGS) * work(attack, options) / work(attack, {})


def defense_trainings(defense: str, options: Mapping[str, Any]) -> float:
    """The cost of one cell of ``defense`` with ``options`` (its full options: defaults filled in),
    in trainings of the victim (:data:`DEFENSE_TRAININGS`)."""
    cost = DEFENSE_TRAININGS.get(defense, DEFAULT_DEFENSE_TRAININGS)
    if callable(cost):
        config = build_defense(defense, dict(options)).config
        cost = cost({f.name: getattr(config, f.name) for f in fields(config)})
    return float(cost)
