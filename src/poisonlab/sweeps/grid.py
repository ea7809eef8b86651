"""Grid specs: a YAML file -> a validated list of :class:`~poisonlab.protocol.RunSpec`, each with a stable id.

Format (every key of ``base``, ``cases`` and ``grid`` is a :class:`RunSpec` key; a dotted key
such as ``attack_options.mode`` sets one option inside a mapping)::

    name: label-flip-digits          # optional, informational
    base:                            # shared by every run
      dataset: digits
      model: lr
      epochs: 5                      # the victim's recipe: epochs, lr, batch_size, optimizer,
      schedule: cosine               # momentum, weight_decay, nesterov, schedule, step_size, gamma
    cases:                           # optional: alternatives, each crossed with the grid
      - {attack: label_flip, attack_options.mode: rule}
      - {attack: label_flip, attack_options.mode: random}
    grid:                            # cartesian product of these lists
      fraction: [0.03, 0.1, 0.3]
      seed: [0, 1]
    resources: {cpus: 1, gpus: 0}    # per run (Ray requests; local runs use ``cpus`` torch threads)

Runs are ``base ⊕ case ⊕ grid point`` (later wins) in a deterministic order (cases, then grid
keys in file order, last key fastest). Everything is validated before anything runs: unknown
keys, bad values, unknown datasets / models / attacks, bad attack and model options all raise
:class:`~poisonlab.errors.ConfigError`. A run's id is the sha256 of its resolved config without
the keys that do not change its result (``out``, ``cache_dir``, ``data_dir``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..attacks import build_attack
from ..cache import canonical_json
from ..errors import ConfigError, PoisonlabError
from ..protocol.config import RECIPE_KEYS, RunSpec, load_yaml_mapping
from .execute import Job

#: keys of RunSpec that do not change a run's result, so they are not part of its id
NON_RESULT_KEYS = ("out", "cache_dir", "data_dir")
#: keys added to RunSpec after sweeps were stored: left out of the id at their default, so the
#: runs of an older results.jsonl keep their ids (and are not re-run on resume)
LATER_DEFAULTS: dict[str, Any] = {"injection": "add", **{k: None for k in RECIPE_KEYS if k not in ("epochs", "lr", "batch_size")}}
RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunSpec))
TOP_KEYS = ("name", "base", "cases", "grid", "resources")


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one run asks for: CPU cores (also its torch thread count) and GPUs (Ray may give fractions)."""

    cpus: int = 1
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.cpus, int) or isinstance(self.cpus, bool) or self.cpus < 1:
            raise ConfigError(f"resources.cpus must be an integer >= 1, got {self.cpus!r}")
        if not isinstance(self.gpus, (int, float)) or isinstance(self.gpus, bool) or self.gpus < 0:
            raise ConfigError(f"resources.gpus must be a number >= 0, got {self.gpus!r}")


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its id and its resolved config (``out`` and ``cache_dir`` set by the sweep):
    a :class:`RunSpec`, or a :class:`~poisonlab.sweeps.execute.Job` (e.g. a cell of ``poisonlab evaluate``)."""

    run_id: str
    config: RunSpec | Job

    def label(self) -> str:
        c = self.config
        if not isinstance(c, RunSpec):
            return c.label()
        opts = ",".join(f"{k}={v}" for k, v in sorted(c.attack_options.items()))
        return f"{c.dataset}/{c.model}/{c.attack}{'[' + opts + ']' if opts else ''} f={c.fraction:g} s={c.seed}"


@dataclass(frozen=True)
class Grid:
    name: str
    runs: tuple[Run, ...]
    resources: Resources


def run_id(cfg: RunSpec | Job | Mapping[str, Any]) -> str:
    """Stable 16-hex id of a run: sha256 of the canonical JSON of its result-relevant config."""
    d = dict(cfg) if isinstance(cfg, Mapping) else cfg.to_dict()
    d = {k: v for k, v in d.items() if k not in NON_RESULT_KEYS and not (k in LATER_DEFAULTS and v == LATER_DEFAULTS[k])}
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()[:16]


def set_dotted(target: dict[str, Any], key: str, value: Any, where: str) -> None:
    """``target[a][b] = value`` for ``key == "a.b"`` (only one level: ``*_options.NAME``)."""
    head, _, rest = key.partition(".")
    if head not in RUN_KEYS:
        raise ConfigError(f"{where}: unknown key {head!r}; valid keys: {', '.join(RUN_KEYS)}")
    if not rest:
        target[head] = copy.deepcopy(value)
        return
    if head not in ("attack_options", "model_options"):
        raise ConfigError(f"{where}: dotted key {key!r} is only allowed inside attack_options / model_options")
    inner = target.get(head)
    inner = dict(inner) if isinstance(inner, Mapping) else {}
    inner[rest] = copy.deepcopy(value)
    target[head] = inner


def _apply(target: dict[str, Any], updates: Mapping[str, Any], where: str) -> None:
    if not isinstance(updates, Mapping):
        raise ConfigError(f"{where} must be a mapping of config keys to values, got {type(updates).__name__}")
    for k, v in updates.items():
        if not isinstance(k, str):
            raise ConfigError(f"{where}: keys must be strings, got {k!r}")
        if k in ("attack_options", "model_options") and isinstance(v, Mapping) and isinstance(target.get(k), Mapping):
            target[k] = {**target[k], **copy.deepcopy(dict(v))}  # options merge, they do not replace
        else:
            set_dotted(target, k, v, where)


def expand(spec: Mapping[str, Any], where: str = "grid") -> Grid:
    """Expand and validate a grid spec (the parsed YAML mapping)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: a grid file must hold a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; valid: {', '.join(TOP_KEYS)}")
    name = str(spec.get("name") or Path(where).stem)
    base: dict[str, Any] = {}
    _apply(base, spec.get("base") or {}, f"{where}: base")
    cases = spec.get("cases") or [{}]
    if not isinstance(cases, list) or not cases:
        raise ConfigError(f"{where}: cases must be a non-empty list of mappings")
    axes = spec.get("grid") or {}
    if not isinstance(axes, Mapping):
        raise ConfigError(f"{where}: grid must be a mapping of config keys to lists of values")
    for k, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{k} must be a non-empty list, got {values!r}")
    res_spec = spec.get("resources") or {}
    if not isinstance(res_spec, Mapping):
        raise ConfigError(f"{where}: resources must be a mapping like {{cpus: 1, gpus: 0}}")
    from ..options import config_from_dict

    resources = config_from_dict(Resources, res_spec, f"{where}: resources")

    runs: list[Run] = []
    seen: dict[str, int] = {}
    keys = list(axes)
    for ci, case in enumerate(cases):
        for point in itertools.product(*(axes[k] for k in keys)):
            values = copy.deepcopy(base)
            _apply(values, case, f"{where}: cases[{ci}]")
            _apply(values, dict(zip(keys, point)), f"{where}: grid point {dict(zip(keys, point))}")
            label = f"{where}: run {len(runs)} ({canonical_json(values)})"
            try:
                cfg = RunSpec.from_dict(values)
            except ConfigError as exc:
                raise ConfigError(f"{label}: {exc}") from None
            rid = run_id(cfg)
            if rid in seen:
                raise ConfigError(f"{label} is identical to run {seen[rid]}: remove the duplicate from the grid")
            seen[rid] = len(runs)
            runs.append(Run(rid, cfg))
    if not runs:
        raise ConfigError(f"{where}: the grid has no runs")
    validate_components([r.config for r in runs if isinstance(r.config, RunSpec)], where)
    return Grid(name, tuple(runs), resources)


def load_grid(path: str | Path, overrides: Mapping[str, Any] | None = None, backend: str = "local") -> Grid:
    """The grid of the YAML file ``path``, with ``overrides`` (run keys -> values: ``device`` and the
    recipe keys, e.g. from ``poisonlab sweep``'s flags) set in its base before expansion, so they hold
    for every run; a case or grid axis that sets one of them too is an error. A device is checked
    here, and against this machine when the runs start here (``backend="local"``)."""
    spec = load_yaml_mapping(path)
    if not overrides:
        return expand(spec, str(path))
    if "device" in overrides:
        from ..devices import parse_device, resolve_device

        parse_device(overrides["device"])
        if backend == "local":
            resolve_device(overrides["device"])
    cases, axes = spec.get("cases") or [], spec.get("grid") or {}
    for key, value in overrides.items():
        clash = [f"cases[{i}]" for i, c in enumerate(cases if isinstance(cases, list) else []) if isinstance(c, Mapping) and key in c]
        clash += ["grid"] if isinstance(axes, Mapping) and key in axes else []
        if clash:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} {value}: {path} sets {key} in {', '.join(clash)}; drop {flag} or those keys")
    base = spec.get("base") or {}
    spec["base"] = {**base, **overrides} if isinstance(base, Mapping) else base  # a bad base: expand says so
    return expand(spec, str(path))


def validate_components(configs: list[RunSpec], where: str) -> None:
    """Check names and options of datasets, models and attacks once per distinct combination."""
    from ..data import load_dataset
    from ..models.victims import build_victim

    shapes: dict[tuple[str, str | None], tuple[tuple[int, ...], int]] = {}
    checked: set[str] = set()
    for cfg in configs:
        try:
            akey = canonical_json([cfg.attack, cfg.attack_options])
            if akey not in checked:
                build_attack(cfg.attack, cfg.attack_options)
                checked.add(akey)
            dkey = (cfg.dataset, cfg.data_dir)
            if dkey not in shapes:
                b = load_dataset(cfg.dataset, cfg.data_dir)
                shapes[dkey] = (tuple(b.train.x.shape[1:]), b.train.num_classes)
            mkey = canonical_json([cfg.model, cfg.model_options, list(shapes[dkey][0]), shapes[dkey][1]])
            if mkey not in checked:
                try:
                    build_victim(cfg.model, shapes[dkey][0], shapes[dkey][1], **cfg.model_options)
                except TypeError as exc:
                    raise ConfigError(f"model {cfg.model!r}: bad model_options {cfg.model_options}: {exc}") from None
                checked.add(mkey)
        except PoisonlabError as exc:
            raise ConfigError(f"{where}: {cfg.dataset}/{cfg.model}/{cfg.attack}: {exc}") from None
