"""``pl.evaluate``: every applicable attack over the seeds, the worst case, the defenses against the
two most damaging attacks, the theory's thresholds — run as cells of one sweep.

The cells (:mod:`.cells`) go through :func:`poisonlab.sweeps.run_sweep` in up to four phases on one
directory, so they share the backends (in-process, local processes, Ray) and one resumable
``results.jsonl`` with ``poisonlab sweep``:

0. with a ``time_budget``: one priced training and one probe per attack (:mod:`.plan`);
1. the attack cells (with a budget: decided cheapest first, run longest first) and one theory cell
   per seed;
2. the defense cells, on the poisons of the two attacks with the lowest mean poisoned accuracy.

Every phase reads back only what the rows recorded, so an evaluation killed at any moment and
run again with the same arguments skips the finished cells and makes the same plan.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import ATTACKS
from ..cache import ArtifactCache
from ..data import load_dataset
from ..data.types import ExperimentData
from ..defenses import DEFENSES
from ..errors import ConfigError
from ..options import config_to_dict
from ..protocol.results import RunResult
from ..protocol.runner import architecture_key
from ..sweeps import Grid, Resources, ResultsLog, Run, run_id, run_sweep
from ..training import Victim, VictimSpec
from ..validation import check_fraction
from .cells import AttackCell, Cell, DataRef, DefenseCell, PriceCell, ProbeCell, TheoryCell, experiment_fingerprint, save_experiment
from .plan import (
    DEFENSE_SHARE,
    WORK_KEYS,
    Choice,
    Decision,
    applicable,
    attack_trainings,
    budget_plan,
    defense_trainings,
    estimate,
    makespan,
    probe_options,
    work,
)
from .references import Reference
from .references import reference as get_reference
from .result import Evaluation, build_evaluation

BACKENDS = ("local", "ray")
#: how many of the most damaging attacks the defenses are run against
TOP_ATTACKS = 2


def _choices(spec: Any, kind: str, names: list[str], key: str) -> list[Choice] | None:
    """``"auto"`` -> None (decided later); a comma string, a list of names or a mapping name ->
    options (``{"attack": registered}`` inside the options makes a variant) -> choices."""
    if isinstance(spec, str) and spec == "auto":
        return None
    if spec is None:
        return []
    if isinstance(spec, str):
        spec = [s for s in (p.strip() for p in spec.split(",")) if s]
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, Iterable):
        items = [(s, {}) for s in spec]
    else:
        raise ConfigError(f"{key} must be 'auto', a list of names or a mapping name -> options, got {spec!r}")
    out, seen = [], set()
    for name, options in items:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}: names must be non-empty strings, got {name!r}")
        if not isinstance(options, Mapping):
            raise ConfigError(f"{key}[{name!r}]: options must be a mapping, got {options!r}")
        opts = dict(options)
        component = opts.pop(kind, name)
        if component not in names:
            raise ConfigError(f"{key}: unknown {kind} {component!r}; valid: {', '.join(names)}")
        if name in seen:
            raise ConfigError(f"{key}: {name!r} given twice")
        seen.add(name)
        out.append(Choice(name, component, opts))
    return out


def _seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = (seeds,)
    if isinstance(seeds, str) or not isinstance(seeds, Iterable):
        raise ConfigError(f"seeds must be a sequence of non-negative integers, got {seeds!r}")
    out = tuple(seeds)
    if not out or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in out) or len(set(out)) != len(out):
        raise ConfigError(f"seeds must be a non-empty sequence of distinct non-negative integers, got {seeds!r}")
    return out


def _victim(victim: Any) -> VictimSpec:
    from .. import api

    if isinstance(victim, VictimSpec):
        return victim
    if isinstance(victim, nn.Module):
        return api.victim(victim)  # raises the API's message (a factory, not a module)
    if isinstance(victim, str) or callable(victim):
        return api.victim(victim)
    raise ConfigError(f"victim must come from poisonlab.victim(...), a registered name or a model factory, got "
                      f"{type(victim).__name__}")


def _data_ref(data: Any, data_dir: str | None) -> tuple[DataRef, ExperimentData | None]:
    if isinstance(data, ExperimentData):
        return DataRef(data.name, fingerprint=experiment_fingerprint(data), memory=data), data
    if isinstance(data, (str, Path)) and str(data):
        load_dataset(str(data), data_dir)  # an unknown name or a bad file fails now
        return DataRef(str(data), data_dir=data_dir), None
    raise ConfigError(f"data must come from poisonlab.data_from_arrays(...) or be a dataset name / .npz path, got "
                      f"{type(data).__name__}")


def victim_key(spec: VictimSpec, seed: int) -> dict[str, Any]:
    """The victim's identity in a cell id: architecture (a user module: class, structure, initial
    weights), options and the full recipe (the device is where, not what)."""
    recipe = {k: v for k, v in config_to_dict(spec.recipe).items() if k != "device"}
    return {**architecture_key(spec, seed), "recipe": recipe}


def evaluate(
    data: ExperimentData | str,
    victim: VictimSpec | str | Callable[[], nn.Module],
    fraction: float = 0.03,
    *,
    attacks: Any = "auto",
    defenses: Any = "auto",
    seeds: Iterable[int] = (0,),
    time_budget: float | None = None,
    backend: str = "local",
    workers: int | None = None,
    out: str | Path | None = None,
    cache: ArtifactCache | str | Path | None = None,
    progress: bool = True,
    reference: str | None = None,
    data_dir: str | None = None,
    command: str | None = None,
) -> Evaluation:
    """How much ``fraction`` of poisoned training data can cost ``victim`` on ``data``.

    Every applicable attack (by its ``check_supported``; the others are listed with the reason) is
    run on its defaults over ``seeds`` under the protocol of :func:`poisonlab.run`; the worst case is
    the lowest poisoned accuracy over the attacks, per seed, then mean ± std. The defenses that apply
    are run against the poisons of the two most damaging attacks (:func:`poisonlab.defend`), and the
    theory block gives τ (and τ_box / τ_gauge for linear softmax victims) for the GradPC target
    (:func:`poisonlab.threshold`).

    Args:
        data: from :func:`~poisonlab.data_from_arrays` (its split is used as is for every seed), or a
            registered dataset name / ``.npz`` path (split into D_tr / D_v by each seed, as
            ``pl.run(name, seed=s)`` does).
        victim: from :func:`~poisonlab.victim`, a registered name or a model factory.
        fraction: the poison fraction ε_d of |D_tr|, in [0, 1].
        attacks: ``"auto"`` (every registered attack that applies; with ``reference``: the
            reference's suite), a comma string or list of names, or a mapping name -> options
            (an ``"attack"`` key inside the options names the registered attack of a variant, e.g.
            ``{"gc_reachable": {"attack": "gc", "target": "reachable"}}``).
        defenses: ``"auto"`` (every registered defense that applies), names or a mapping as for
            ``attacks`` (key ``"defense"``), or ``None`` / ``[]`` for none.
        seeds: the seeds (each one: the split of a named dataset, the victim's initialisation and
            batch order, the attack's draws).
        time_budget: seconds for the whole evaluation, or None (no limit). The attacks are priced by
            a short probe first and decided cheapest first (then run longest first, so that parallel
            workers finish together); what would not fit is shortened or skipped,
            and the report says which and why. Defenses run in the time left.
        backend: ``"local"`` or ``"ray"``.
        workers: local: None or 0 — the cells run in this process (a model factory or in-memory
            data need nothing more); N >= 1 — N worker processes (the factory must be picklable:
            a top-level function, not a lambda). Ray: tasks at once (default: one per CPU).
        out: directory for ``results.jsonl`` (resumable), each cell's artifacts and the reports
            ``report.md`` / ``report.json`` / ``report.html``; None: a temporary directory, removed.
        cache: an :class:`~poisonlab.cache.ArtifactCache` or directory for the clean victims and
            targets; None: ``<out>/cache``.
        progress: a progress bar and one line per finished cell.
        reference: ``"thesis-table-2.2"``: a column with the thesis' Table 2.2 numbers (and, with
            ``attacks="auto"``, the table's attack suite and options).
        data_dir: where a named dataset's files are (default ``$POISONLAB_DATA``).
        command: the command line to print in the report's settings (the CLI passes its own).

    Returns:
        An :class:`~poisonlab.evaluation.result.Evaluation` (``to_markdown()``, ``to_json()``,
        ``to_html(path)``).
    """
    # ------------------------------------------------------------------ validate everything first
    fraction = check_fraction(fraction)
    seeds_t = _seeds(seeds)
    if time_budget is not None and (not isinstance(time_budget, (int, float)) or isinstance(time_budget, bool)
                                    or not time_budget > 0):
        raise ConfigError(f"time_budget must be a number of seconds > 0 or None, got {time_budget!r}")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0
                                or (backend == "ray" and workers < 1)):
        raise ConfigError(f"workers must be None or an integer >= {1 if backend == 'ray' else 0}, got {workers!r}")
    if not isinstance(progress, bool):
        raise ConfigError(f"progress must be True or False, got {progress!r}")
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"out must be a directory path or None, got {type(out).__name__}")
    if cache is not None and not isinstance(cache, (str, Path, ArtifactCache)):
        raise ConfigError(f"cache must be an ArtifactCache, a directory or None, got {type(cache).__name__}")
    attack_choices = _choices(attacks, "attack", ATTACKS.names(), "attacks")
    defense_choices = _choices(defenses, "defense", DEFENSES.names(), "defenses")
    spec = _victim(victim)
    ref_obj: Reference | None = get_reference(reference, spec.model) if reference is not None else None
    ref, memory = _data_ref(data, data_dir)
    in_process = backend == "local" and not workers
    if not in_process and spec.factory is not None:
        try:
            pickle.dumps(spec.factory) if backend == "local" else _cloudpickle(spec.factory)
        except Exception as exc:
            raise ConfigError(f"victim: the model factory {spec.model!r} cannot be sent to {backend} workers "
                              f"({type(exc).__name__}: {exc}); define it as a top-level function of an importable "
                              "module, or run in this process (backend='local', workers=None)") from None
    if attack_choices is None:
        attack_choices = ([Choice(n, a, dict(o)) for n, (a, o) in ref_obj.attacks.items()] if ref_obj is not None
                          else [Choice(n, n) for n in ATTACKS.names()])
    if defense_choices is None:
        defense_choices = [Choice(n, n) for n in DEFENSES.names()]
    if not attack_choices:
        raise ConfigError("attacks: nothing to evaluate (give at least one attack, or 'auto')")

    # ------------------------------------------------------------------ what applies (no training)
    d0 = memory if memory is not None else ref.load(seeds_t[0])
    bound = spec.for_data(d0.input_shape, d0.num_classes, d0.default_batch_size)
    bound.build(seeds_t[0])  # a model that cannot be built fails before any training
    probe_victim = Victim(bound, seeds_t[0])
    attack_ok, decisions = applicable(attack_choices, "attack", lambda a: a.check_supported(d0.attack_data(), probe_victim))
    defense_ok, not_def = applicable(defense_choices, "defense", lambda d: d.check_supported(d0.train, probe_victim))
    decisions += not_def
    if not attack_ok:
        raise ConfigError("no attack applies to this victim and data: " + "; ".join(f"{d.subject}: {d.reason}"
                                                                                   for d in decisions))

    # ------------------------------------------------------------------ where
    tmp = None
    if out is None:
        tmp = tempfile.mkdtemp(prefix="poisonlab-evaluate-")
        directory = Path(tmp)
    else:
        directory = Path(out).resolve()
        directory.mkdir(parents=True, exist_ok=True)
    cache_dir = str(cache.root if isinstance(cache, ArtifactCache) else Path(cache).resolve()) if cache is not None \
        else str(directory / "cache")
    if memory is not None and not in_process:
        ref = replace(ref, saved=str(save_experiment(directory / "data.npz", memory)), memory=None)
    key = victim_key(bound, seeds_t[0])
    threads = torch.get_num_threads()
    resources = Resources(cpus=threads if in_process else max(1, threads // max(1, workers or 1)))
    # cells that run at once: the budget is wall time, the cells' recorded seconds are each worker's
    # time, so the plan spends up to lanes × the budget of worker-seconds
    lanes = 1 if in_process else max(1, workers or 1)
    common: dict[str, Any] = {"data": ref, "victim": spec, "victim_key": key, "fraction": fraction}

    def sweep(name: str, cells: list[Cell]) -> dict[str, dict[str, Any]]:
        runs = tuple(Run(run_id(c), c) for c in cells)
        if runs:
            run_sweep(Grid(name, runs, resources), directory, backend=backend, workers=0 if in_process else workers,
                      cache_dir=cache_dir, progress=progress)
        rows = ResultsLog(directory / "results.jsonl").latest()
        return {r.run_id: rows[r.run_id] for r in runs if r.run_id in rows}

    try:
        # -------------------------------------------------------------- phase 0: prices and the plan
        plan: list[Decision] = []
        priced: dict[str, Any] = {}
        if time_budget is not None:
            price = PriceCell(seed=seeds_t[0], **common)
            probes = [ProbeCell(seed=seeds_t[0], name=c.name, attack=c.component,
                                options=probe_options(c.component, c.options),
                                double=probe_options(c.component, c.options, 2) if c.component in WORK_KEYS else None,
                                **common) for c in attack_ok]
            rows = sweep("evaluate-prices", [price, *probes])
            price_row = rows.get(run_id(price))
            train_seconds = float(price_row["result"]["train_seconds"]) if price_row and price_row["status"] == "ok" else 0.0
            spent = sum(float(r.get("seconds", 0.0)) for r in rows.values())
            # the wall time the prices took on the lanes, as worker-seconds of the budget
            spent_wall = makespan([float(rows[run_id(c)].get("seconds", 0.0)) for c in (price, *probes)
                                   if run_id(c) in rows], lanes)
            estimates = []
            for c, p in zip(attack_ok, probes):
                row = rows.get(run_id(p))
                if row is None or row["status"] != "ok":
                    plan.append(Decision(c.name, "attack", "skip", f"its probe failed: {row['error'] if row else 'no row'}"))
                    continue
                secs, per = estimate(c.component, c.options, row["result"]["seconds"])
                priced[c.name] = {"probe_seconds": row["result"]["seconds"], "per_iteration": per,
                                  "iterations": work(c.component, c.options), "expected_seconds": secs,
                                  "probe_options": p.options}
                estimates.append((c, secs))
            priced["_train_seconds"] = train_seconds
            priced["_spent"] = spent
            share = DEFENSE_SHARE if defense_ok else 0.0
            priced["_defense_share"] = share
            priced["_lanes"] = lanes
            priced["_spent_wall"] = spent_wall
            plan += budget_plan(estimates, train_seconds=train_seconds, n_seeds=len(seeds_t),
                                budget=float(time_budget) * (1.0 - share) * lanes, spent=spent_wall * lanes)
        else:
            plan += [Decision(c.name, "attack", "run", "no time budget", None, dict(c.options)) for c in attack_ok]
        decisions += plan
        runnable = [d for d in plan if d.action in ("run", "shorten")]
        by_name = {c.name: c for c in attack_ok}

        # -------------------------------------------------------------- phase 1: attacks and theory
        # dearest first (a budget's estimates, else the cost prior), so that the lanes finish together
        cost = {d.subject: d.expected_seconds if d.expected_seconds is not None
                else attack_trainings(by_name[d.subject].component, d.options) for d in runnable}
        attack_cells = [AttackCell(seed=s, name=d.subject, attack=by_name[d.subject].component, options=d.options, **common)
                        for d in _longest_first([(cost[d.subject], d) for d in runnable]) for s in seeds_t]
        theory_cells = [TheoryCell(seed=s, **common) for s in seeds_t]
        rows1 = sweep("evaluate-attacks", [*attack_cells, *theory_cells])

        # -------------------------------------------------------------- phase 2: defenses vs the top two
        ranked = _most_damaging(attack_cells, rows1)
        top = ranked[:TOP_ATTACKS]
        chosen: list[tuple[float | None, list[DefenseCell]]] = []  # (price per cell in trainings, the cells)
        if top and defense_ok:
            left = None
            if time_budget is not None:
                # what is left of the wall budget after the prices and the attacks as they ran on the lanes
                # (a lane idle while the last cells finish is spent too), in worker-seconds
                phase1 = makespan([float(rows1[run_id(c)].get("seconds", 0.0))
                                   for c in (*attack_cells, *theory_cells) if run_id(c) in rows1], lanes)
                left = (float(time_budget) - priced["_spent_wall"] - phase1) * lanes
            train_seconds = priced.get("_train_seconds", 0.0)
            for c in (sorted(defense_ok, key=lambda c: defense_trainings(c.component, c.options)) if left is not None
                      else defense_ok):  # cheapest first under a budget
                cells = [DefenseCell(seed=cell.seed, defense=c.component, attack_name=cell.name, options=c.options,
                                     poisons=str(directory / "runs" / run_id(cell) / "poisons.npz"), poisons_id=run_id(cell),
                                     **common)
                         for name in top for cell in attack_cells if cell.name == name and _ok(rows1, cell)]
                trainings = defense_trainings(c.component, c.options)  # the order's prior (and the budget's price)
                if left is not None:
                    cost = trainings * train_seconds * len(cells)
                    if cost > left:
                        decisions.append(Decision(c.name, "defense", "skip", f"would take ≈ {cost:.0f} s "
                                                  f"(≈ {trainings:g} trainings per cell), ≈ {max(left, 0):.0f} s of the "
                                                  "budget left", cost))
                        continue
                    left -= cost
                    decisions.append(Decision(c.name, "defense", "run", f"≈ {cost:.0f} s fits", cost, dict(c.options)))
                chosen.append((trainings, cells))
        defense_cells = [cell for cells in _longest_first(chosen) for cell in cells]
        rows2 = sweep("evaluate-defenses", list(defense_cells))

        settings = {
            "dataset": ref.dataset, "data": ref.describe(), "model": spec.model, "victim": key,
            "device": spec.recipe.device, "fraction": fraction, "seeds": list(seeds_t), "time_budget": time_budget,
            "backend": backend, "workers": workers, "reference": reference, "top_attacks": top,
            "attacks": {c.name: {"attack": c.component, "options": c.options} for c in attack_choices},
            "defenses": {c.name: {"defense": c.component, "options": c.options} for c in defense_choices},
            "prices": priced, "directory": str(directory) if tmp is None else None,
            "command": command or _api_call(ref.dataset if memory is None else "data", spec, fraction, attack_choices,
                                            defenses, seeds_t, time_budget, backend, workers, reference),
        }
        ev = build_evaluation(settings, decisions, attack_cells, rows1, theory_cells, defense_cells, rows2, directory,
                              ref_obj, d0)
        if tmp is None:
            ev.write(directory)
        return ev
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _longest_first(priced: list[tuple[float | None, Any]]) -> list[Any]:
    """The items of ``(price, item)`` pairs, dearest first. A budget decides cheapest first, then runs
    what it chose longest first, so that parallel lanes finish together (the budget counts
    worker-seconds, and a lane idle beside the last long cell spends them for nothing). Stable:
    without prices (None, no budget) the given order is kept."""
    return [item for _, item in sorted(priced, key=lambda p: -(p[0] or 0.0))]


def _ok(rows: Mapping[str, dict[str, Any]], cell: Cell) -> bool:
    row = rows.get(run_id(cell))
    return row is not None and row["status"] == "ok"


def _most_damaging(cells: list[AttackCell], rows: Mapping[str, dict[str, Any]]) -> list[str]:
    """Attack names by mean poisoned accuracy over their finished seeds, lowest first (ties: by name)."""
    acc: dict[str, list[float]] = {}
    for c in cells:
        if _ok(rows, c):
            acc.setdefault(c.name, []).append(RunResult.from_dict(rows[run_id(c)]["result"]).poisoned_accuracy)
    return sorted(acc, key=lambda n: (sum(acc[n]) / len(acc[n]), n))


def _cloudpickle(obj: Any) -> bytes:
    import cloudpickle  # type: ignore[import-untyped]  # Ray's serialiser (installed with Ray)

    return cloudpickle.dumps(obj)


def _api_call(data: str, spec: VictimSpec, fraction: float, attacks: list[Choice], defenses: Any, seeds: tuple[int, ...],
              time_budget: float | None, backend: str, workers: int | None, reference: str | None) -> str:
    """The ``pl.evaluate`` call that reruns this evaluation (the victim as its recipe)."""
    r = spec.recipe
    victim = f"pl.victim({spec.model!r}, optimizer={r.optimizer!r}, lr={r.lr!r}, epochs={r.epochs!r}, " \
             f"batch_size={r.batch_size!r}, device={r.device!r})"
    atk = {c.name: ({"attack": c.component} if c.component != c.name else {}) | c.options for c in attacks}
    dfn = defenses if isinstance(defenses, str) or defenses is None else list(defenses)
    return (f"pl.evaluate({data!r}, {victim}, {fraction!r}, attacks={atk!r}, defenses={dfn!r}, seeds={seeds!r}, "
            f"time_budget={time_budget!r}, backend={backend!r}, workers={workers!r}, reference={reference!r})")


__all__ = ["evaluate", "victim_key"]
