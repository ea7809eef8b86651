"""THE protocol runner (thesis §2.5.2): pretrain → attack → test.

1. Pretrain: train the victim on D_tr (70 % of the clean training set), test accuracy ``acc1``.
2. Attack: craft exactly ``poison_count(fraction, |D_tr|)`` points, timed.
3. Test: retrain the victim *from scratch* with the identical recipe and seed on D_tr ∪ D_p,
   test accuracy ``acc2``; drop = acc1 − acc2 in percentage points.

The clean and poisoned retrains share the seed, so they start from the same initial weights
and differ only by the data. :func:`run_experiment` writes no file: its :class:`~.results.RunResult`
holds the poisons and models, and the caller writes them (:func:`.run_files.write_run`).
"""

from __future__ import annotations

import platform
import sys
import time
from typing import Any, Callable, Literal

import torch

from .._version import __version__
from ..artifacts import load_poisons
from ..attacks import Attack, build_attack
from ..cache import ArtifactCache, as_cache, module_fingerprint, tensor_fingerprint
from ..data import PoisonedDataset, check_fraction, poison_count
from ..data.perturbation import perturbation_stats
from ..data.types import Dataset, ExperimentData, PoisonSet
from ..defenses import Defense
from ..errors import ConfigError
from ..models.extractors import extractor_fingerprint
from ..options import config_to_dict
from ..provenance import run_environment
from ..seeding import deterministic, torch_generator
from ..training import TrainConfig, Victim, VictimSpec, accuracy, check_victim, resolve_device
from ..validation import check_output_dir
from .config import RunSpec
from .defend import defense_from_config, run_defense
from .prepare import prepare
from .results import RunResult
from .run_files import write_run
from .run_log import Report, run_messages, silent

Log = Callable[[str], None]
#: the protocol's stages, in order, as reported to an ``on_stage`` callback
Stage = Literal["pretrain", "attack", "retrain", "defend"]
StageCallback = Callable[[Stage], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def recipe_key(recipe: TrainConfig) -> dict[str, Any]:
    """The recipe's fields that change the trained weights (the device is keyed separately)."""
    return {k: v for k, v in config_to_dict(recipe).items() if k != "device"}


def architecture_key(spec: VictimSpec, seed: int) -> dict[str, Any]:
    """What identifies the victim's architecture and initial weights: the registered name and its
    options, or — for a user's module — its class, its printed structure and its initial weights."""
    if spec.factory is None:
        return {"model": spec.model, "model_options": spec.options,
                **({"extractor_sha256": fp} if (fp := extractor_fingerprint(spec.model)) else {})}
    module = spec.build(seed)
    return {"model": spec.model, "module_class": f"{type(module).__module__}.{type(module).__qualname__}",
            "module_repr": repr(module), "init": module_fingerprint(module)}


def trained_victim_key(train_set: Dataset, spec: VictimSpec, seed: int) -> dict[str, Any]:
    """Everything a victim trained on ``train_set`` with its recipe and seed depends on: the set's
    inputs and labels (hashed), the architecture and initial weights, the recipe, the device type,
    the seed and the versions (the cache adds the source fingerprint, which covers code edits)."""
    r = spec.recipe
    return {
        "data": tensor_fingerprint(train_set.x, train_set.y), **architecture_key(spec, seed),
        "input_shape": list(spec.input_shape or ()), "num_classes": spec.num_classes, "recipe": recipe_key(r),
        "device": resolve_device(r.device).type, "seed": seed, "poisonlab_version": __version__,
        "torch_version": torch.__version__,
    }


def clean_victim_key(data: ExperimentData, spec: VictimSpec, seed: int) -> dict[str, Any]:
    """The cache key of stage 1: :func:`trained_victim_key` of D_tr, with the dataset's name and
    split seed (the fingerprint of D_tr already covers both; they make the entry readable)."""
    return {"dataset": data.name, "split_seed": data.split_seed, **trained_victim_key(data.train, spec, seed)}


def train_victim(train_set: Dataset, spec: VictimSpec, seed: int, *, cache: ArtifactCache | None = None,
                 kind: str, key: dict[str, Any] | None = None,
                 progress: bool | str = False) -> tuple[torch.nn.Module, bool]:
    """The victim trained from scratch on ``train_set`` (its recipe, seed ``seed``), through ``cache``
    when given: an entry of ``kind`` under ``key`` (default :func:`trained_victim_key`). A hit gives
    the weights a training would (bit-identical: the cache stores the trained state as is). Returns
    (model in eval mode, cache hit)."""
    if cache is None:
        return spec.train(train_set, seed, progress=progress), False
    state, hit = cache.get_or_create(kind, key if key is not None else trained_victim_key(train_set, spec, seed),
                                     lambda: spec.train(train_set, seed, progress=progress).state_dict())
    model = spec.build(seed)
    model.load_state_dict(state)
    return model.eval(), hit


def train_clean(data: ExperimentData, spec: VictimSpec, seed: int, *, cache: ArtifactCache | None = None,
                progress: bool = False) -> tuple[torch.nn.Module, bool]:
    """Stage 1: the victim trained on D_tr, through ``cache`` when given. Returns (model, cache hit)."""
    return train_victim(data.train, spec, seed, cache=cache, kind="victim_clean",
                        key=clean_victim_key(data, spec, seed) if cache is not None else None,
                        progress="pretrain" if progress else False)


def train_poisoned(mixed: Dataset, spec: VictimSpec, seed: int, *, cache: ArtifactCache | None = None,
                   progress: bool | str = False) -> tuple[torch.nn.Module, bool]:
    """Stage 3 (and the defender's first training): the victim retrained from scratch on the
    poisoned training set ``mixed``, through ``cache`` when given (kind ``victim_poisoned``), so
    the defenses judged on one poison set share the training the run did."""
    return train_victim(mixed, spec, seed, cache=cache, kind="victim_poisoned", progress=progress)


def pretrain_victim(cfg: RunSpec, data: ExperimentData, spec: VictimSpec,
                    progress: bool = False) -> tuple[torch.nn.Module, bool]:
    """Stage 1 of a run config on its :func:`prepare`-d data and spec, through the artifact cache when
    ``cfg.cache_dir`` is set."""
    return train_clean(data, spec, cfg.seed, cache=as_cache(cfg.cache_dir), progress=progress)


def run_protocol(cfg: RunSpec, *, progress: bool = True, log: Log = _stderr,
                 on_stage: StageCallback | None = None) -> RunResult:
    """Run the three stages of a run config, write the artifacts to ``cfg.out`` and return the result."""
    attack = build_attack(cfg.attack, cfg.attack_options)  # validates options before any work
    defense = defense_from_config(cfg)
    exp, spec = prepare(cfg)
    poisons = load_poisons(cfg.poisons) if cfg.poisons else None
    out = check_output_dir(cfg.out or cfg.default_out(), "out")  # a file in the way fails now, not after the run
    result = run_experiment(exp, spec, attack, cfg.fraction, seed=cfg.seed, injection=cfg.injection, defense=defense,
                            poisons=poisons, poisons_from=cfg.poisons, cache=as_cache(cfg.cache_dir),
                            progress=progress, report=run_messages(log), config=cfg.to_dict(), on_stage=on_stage)
    return write_run(out, result, exp.train)


@deterministic()  # the determinism / TF32 switches for the run, the caller's restored afterwards
def run_experiment(
    data: ExperimentData,
    spec: VictimSpec,
    attack: Attack,
    fraction: float,
    *,
    seed: int = 0,
    injection: str = "add",
    defense: Defense | None = None,
    poisons: PoisonSet | None = None,
    poisons_from: str | None = None,
    cache: ArtifactCache | None = None,
    progress: bool = True,
    report: Report = silent,
    config: dict[str, Any] | None = None,
    on_stage: StageCallback | None = None,
) -> RunResult:
    """THE protocol on prepared data: pretrain → attack → test (→ defend); returns its :class:`RunResult`.

    ``spec`` is bound to ``data`` here (its shape, classes and default batch size). ``poisons``
    re-uses a poison set instead of attacking (checked against the attack's contract). No file is
    written: the result holds the poisons and the models, :func:`.run_files.write_run` writes them
    (``result.json``, poisons, weights, the poison grid). Nothing is printed either: ``report``
    receives each stage's event (:mod:`.run_log`; :func:`~.run_log.run_messages` makes the lines
    ``poisonlab run`` shows).
    ``on_stage`` is called with each :data:`Stage` as it starts (e.g. a sweep's progress display).
    The run is under :func:`~poisonlab.seeding.deterministic`'s switches; the record's ``environment``
    says what produced it (:func:`~poisonlab.provenance.run_environment`: commit, torch threads,
    device and its name, determinism switches).
    """
    stage = on_stage or (lambda _s: None)
    t_start = time.perf_counter()
    check_fraction(fraction)
    if injection not in ("add", "replace"):
        raise ConfigError(f"injection must be 'add' or 'replace', got {injection!r}")
    spec = spec.for_data(data.input_shape, data.num_classes, data.default_batch_size)
    check_victim(spec, data.train.x, seed)  # built and run on one batch: a wrong module fails now, before any training
    adata = data.attack_data(injection)
    victim0 = Victim(spec, seed)
    attack.check_supported(adata, victim0)  # UnsupportedError before any training
    n_poison = poison_count(fraction, len(data.train))
    model_label = spec.model
    report("start", {"dataset": data.name, "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
                     "model": model_label, "epochs": spec.recipe.epochs, "batch_size": spec.recipe.batch_size,
                     "attack": attack.name, "fraction": fraction, "n_poison": n_poison})

    report("pretrain", {})
    stage("pretrain")
    clean_model, cache_hit = train_clean(data, spec, seed, cache=cache, progress=progress)
    if cache_hit and cache is not None:
        report("clean_cached", {"cache": cache.root})
    acc1 = accuracy(clean_model, data.test)
    clean_state = {k: v.detach().clone() for k, v in clean_model.state_dict().items()}
    victim = Victim(spec, seed, clean_state)
    report("clean_accuracy", {"accuracy": acc1})

    t_attack = time.perf_counter()
    stage("attack")
    if poisons is not None:
        report("reuse", {"n_poison": len(poisons), "source": poisons_from})
        poisons = attack._check(poisons, adata, n_poison)
    else:
        report("attack", {"attack": attack.name, "n_poison": n_poison})
        poisons = attack.poison(adata, victim, fraction, generator=torch_generator(seed, "attack"), progress=progress,
                                cache=cache)
    attack_seconds = time.perf_counter() - t_attack

    where = "D_tr ∪ D_p" if injection == "add" else "D_tr with the poisons in place of their sources"
    report("retrain", {"where": where})
    stage("retrain")
    mixed = PoisonedDataset.mix(data.train, poisons, injection)
    poisoned_model, poisoned_hit = train_poisoned(mixed.dataset, spec, seed, cache=cache, progress="retrain" if progress else False)
    acc2 = accuracy(poisoned_model, data.test)
    report("poisoned_accuracy", {"accuracy": acc2})
    attack_info = {**poisons.info, **attack.assess(poisons, poisoned_model, data.test)}
    stats = perturbation_stats(poisons, data.train)

    defended = None
    if defense is not None:  # defend stage: score D_tr ∪ D_p, filter, retrain, detection metrics
        stage("defend")
        defended = run_defense(defense, mixed, victim, poisoned_model, data.val, data.test, acc1, seed=seed,
                               poisoned_accuracy=acc2, progress=progress, report=report)

    r = spec.recipe
    return RunResult(
        dataset=data.name,
        model=model_label,
        attack=attack.name,
        fraction=fraction,
        injection=injection,
        seed=seed,
        n_train=len(data.train),
        n_val=len(data.val),
        n_test=len(data.test),
        n_poison=len(poisons),
        clean_accuracy=acc1,
        poisoned_accuracy=acc2,
        attack_seconds=attack_seconds,
        total_seconds=time.perf_counter() - t_start,
        max_perturbation=stats["max_perturbation"],
        mean_perturbation=stats["mean_perturbation"],
        attack_info=attack_info,
        poisonlab_version=__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        device=str(victim.device),
        environment=run_environment(victim.device),
        cache={"victim_clean": None if cache is None else ("hit" if cache_hit else "miss"),
               "victim_poisoned": None if cache is None else ("hit" if poisoned_hit else "miss")},
        config={**(config or {}), "out": None, "attack_options": attack.options(), "recipe": recipe_key(r),
                "bounds": data.bounds.describe()},
        artifacts={},
        defended=defended,
        poisons=poisons,
        clean_model=clean_model,
        poisoned_model=poisoned_model,
    )
