"""The public API: poison *your* model on *your* data under the fixed protocol, in a few lines.

    >>> import poisonlab as pl
    >>> data = pl.data_from_arrays(x_train, y_train, x_test, y_test, bounds=(lo, hi))   # doctest: +SKIP
    >>> victim = pl.victim(lambda: MyNet(), optimizer="adam", lr=1e-3, epochs=50)         # doctest: +SKIP
    >>> result = pl.run(data, victim, "label_flip", fraction=0.03)                         # doctest: +SKIP
    >>> result.clean_accuracy, result.poisoned_accuracy, result.accuracy_drop              # doctest: +SKIP

Every function validates its arguments before any work (a :class:`~poisonlab.errors.ConfigError`
or :class:`~poisonlab.errors.DataError` for a bad value, an
:class:`~poisonlab.errors.UnsupportedError` when a component cannot work on this model or data);
nothing here reads or writes global state: the cache is an argument, files are written only to
``out``. The CLI (``poisonlab run`` …) is a thin layer over the same functions: each command
parses its arguments into a :class:`~poisonlab.protocol.config.RunSpec` (``pl.RunSpec``, also built
from YAML and by sweeps) and makes one call — :func:`run_spec`, :func:`make_target`,
:func:`threshold_spec`, :func:`transfer` or :func:`sweep` (a grid of run specs; :func:`run` is the
same protocol for your own arrays and modules; :func:`run_spec` for a run described by names).
``poisonlab disguise``, ``vae`` and ``pretrain`` likewise call :func:`disguise`, :func:`train_vae` and
:func:`pretrain_extractor`.

The protocol (thesis §2.5.2): the victim is trained on D_tr (``acc1``), the attack crafts
``round(fraction·|D_tr|)`` poisons, the victim is retrained from scratch with the same recipe and
seed on D_tr ∪ poisons (``acc2``); the drop is ``acc1 − acc2`` in percentage points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .attacks import Attack, build_attack
from .cache import ArtifactCache, as_cache
from .data import ExperimentData, PoisonedDataset, PoisonSet, data_from_arrays, from_bundle, load_dataset
from .data.validate import validate as _validate
from .defenses import Defense, build_defense
from .errors import ConfigError
from .generative.disguise_files import CraftedDisguise
from .generative.vae_quality import TrainedVAE
from .models.victims import resolve_victim
from .pretrain import PretrainConfig
from .pretrain.result import PretrainedExtractor
from .protocol.config import RunSpec
from .protocol.defend import run_defense
from .protocol.results import DefenseResult, RunResult, ThresholdResult
from .protocol.run_files import write_run
from .protocol.run_log import run_messages
from .protocol.runner import run_experiment, train_clean, train_poisoned
from .seeding import torch_generator
from .sweeps import Grid, SweepPlan, SweepSummary
from .training import TrainConfig, Victim, VictimSpec, check_victim
from .validation import check_output_dir

__all__ = ["data_from_arrays", "defend", "disguise", "make_target", "poison", "pretrain_extractor", "run", "run_spec", "sweep",
           "threshold", "threshold_spec", "train_vae", "transfer", "validate", "victim", "CraftedDisguise", "DefenseResult",
           "PretrainConfig", "PretrainedExtractor", "RunResult", "RunSpec", "ThresholdResult", "TrainedVAE"]


# ---------------------------------------------------------------------------- the victim
def victim(
    model: str | Callable[[], nn.Module],
    *,
    optimizer: str = "sgd",
    lr: float = 0.1,
    epochs: int = 100,
    batch_size: int | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    schedule: str | None = None,
    device: str = "auto",
    nesterov: bool = False,
    step_size: int | None = None,
    gamma: float = 0.1,
    options: Mapping[str, Any] | None = None,
) -> VictimSpec:
    """A victim: an architecture and the recipe that trains it (a spec, not a trained model).

    The protocol trains it on D_tr (stage 1) and retrains it from scratch on D_tr ∪ poisons
    (stage 3) with the same seed, so both start from the same initial weights and batch order.

    Args:
        model: a registered architecture name (``"lr"``, ``"nn"``, ``"cnn"``, ``"resnet18"``, …; see
            ``poisonlab list``) or any zero-argument callable returning a *fresh* ``nn.Module`` that
            maps inputs (N, *input_shape) to logits (N, num_classes) — e.g. ``lambda: MyNet()``. It is
            called under a seed derived from the run's seed, so its initial weights are reproducible.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: base learning rate.
        epochs: passes over the training set.
        batch_size: mini-batch size; ``None``: the data's default (1000 for MNIST-like data, 256 for
            CIFAR-10, 128 for arrays from :func:`data_from_arrays`).
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 penalty (AdamW: decoupled weight decay).
        schedule: ``None`` (constant), ``"cosine"`` (to 0 over ``epochs``) or ``"step"`` (×``gamma``
            every ``step_size`` epochs).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, …
        nesterov: Nesterov momentum (SGD with ``momentum > 0``).
        step_size: schedule ``"step"``: its period in epochs; ``None``: ``max(1, epochs // 3)``.
        gamma: schedule ``"step"``: the factor applied every ``step_size`` epochs, in (0, 1].
        options: options of a registered architecture (e.g. ``{"hidden": [256, 128]}`` for ``"nn"``).

    Returns:
        A :class:`~poisonlab.training.VictimSpec`, bound to the data's shape by :func:`poison` / :func:`run`.
    """
    recipe = TrainConfig(optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, momentum=momentum,
                         weight_decay=weight_decay, schedule=schedule, device=device, nesterov=nesterov,
                         step_size=step_size, gamma=gamma)
    if isinstance(model, str):
        resolve_victim(model)  # unknown name -> UnknownNameError listing the valid ones
        return VictimSpec(model, recipe=recipe, options=dict(options or {}))
    if isinstance(model, nn.Module):
        raise ConfigError("victim(model): pass a zero-argument callable that returns a fresh module "
                          f"(e.g. lambda: {type(model).__name__}(...)), not a module instance — the protocol "
                          "retrains the victim from scratch")
    if not callable(model):
        raise ConfigError(f"victim(model): expected a registered name or a callable returning an nn.Module, got {model!r}")
    if options:
        raise ConfigError("victim(options=...) configures registered architectures; a factory takes its own arguments")
    label = getattr(model, "__name__", type(model).__name__)
    return VictimSpec("custom" if label == "<lambda>" else str(label), recipe=recipe, factory=model)


# ---------------------------------------------------------------------------- argument coercion
def _data(data: Any, seed: int) -> ExperimentData:
    if isinstance(data, ExperimentData):
        return data
    if isinstance(data, str):
        return from_bundle(load_dataset(data), seed)
    raise ConfigError(f"data must come from poisonlab.data_from_arrays(...) (or be a dataset name), got {type(data).__name__}")


def _victim(v: Any) -> VictimSpec:
    if isinstance(v, VictimSpec):
        return v
    if isinstance(v, str) or callable(v):
        return victim(v)
    raise ConfigError(f"victim must come from poisonlab.victim(...), a registered name or a model factory, got {type(v).__name__}")


def _attack(attack: Any, options: Mapping[str, Any] | None) -> Attack:
    if isinstance(attack, Attack):
        if options:
            raise ConfigError("options=... configures an attack given by name; this attack object has its config already")
        return attack
    if isinstance(attack, str):
        return build_attack(attack, dict(options or {}))
    raise ConfigError(f"attack must be a name (see poisonlab.attacks.ATTACKS.names()) or an Attack, got {type(attack).__name__}")


def _defense(defense: Any, options: Mapping[str, Any] | None) -> Defense:
    if isinstance(defense, Defense):
        if options:
            raise ConfigError("options=... configures a defense given by name; this defense object has its config already")
        return defense
    if isinstance(defense, str):
        return build_defense(defense, dict(options or {}))
    raise ConfigError(f"defense must be a name (see poisonlab.defenses.DEFENSES.names()) or a Defense, got {type(defense).__name__}")


def _seed(seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def _bound(spec: VictimSpec, data: ExperimentData, seed: int) -> VictimSpec:
    spec = spec.for_data(data.input_shape, data.num_classes, data.default_batch_size)
    check_victim(spec, data.train.x, seed)  # built and run on one batch of the data: a wrong module fails before any training
    return spec


# ---------------------------------------------------------------------------- poison / run
def poison(
    data: ExperimentData | str,
    victim: VictimSpec | str | Callable[[], nn.Module],
    attack: str | Attack,
    fraction: float,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    cache: ArtifactCache | str | Path | None = None,
    progress: bool = True,
) -> PoisonSet:
    """Craft ``round(fraction·|D_tr|)`` poisons against ``victim`` (stages 1–2 of the protocol).

    The victim is first trained on D_tr (the attacker's knowledge of it), then the attack runs.

    Args:
        data: from :func:`data_from_arrays` (or a dataset name such as ``"digits"``).
        victim: from :func:`victim` (or a registered name, or a model factory).
        attack: a registered attack name (``poisonlab.attacks.ATTACKS.names()``) or an ``Attack`` object.
        fraction: poison fraction ε_d of |D_tr|, in [0, 1].
        seed: seeds the victim's initial weights and batch order and the attack.
        options: the attack's options (its config dataclass fields), with a name.
        cache: an :class:`~poisonlab.cache.ArtifactCache` or a directory: re-use the clean victim,
            target models and pretrained generators of earlier calls; ``None``: no cache.
        progress: progress bars for long work.

    Returns:
        A :class:`~poisonlab.data.PoisonSet`: ``.x`` (n, *input_shape), ``.y`` (n,), ``.source`` (n,)
        (the D_tr index each poison was made from, −1 for none), ``.info`` (the attack's
        diagnostics) and ``.numpy()``.
    """
    from .data import check_fraction

    seed = _seed(seed)
    check_fraction(fraction)
    atk = _attack(attack, options)
    d = _data(data, seed)
    spec = _bound(_victim(victim), d, seed)
    adata = d.attack_data()
    atk.check_supported(adata, Victim(spec, seed))  # UnsupportedError before any training
    clean, _ = train_clean(d, spec, seed, cache=as_cache(cache), progress=progress)
    state = {k: v.detach().clone() for k, v in clean.state_dict().items()}
    return atk.poison(adata, Victim(spec, seed, state), fraction, generator=torch_generator(seed, "attack"),
                      progress=progress, cache=as_cache(cache))


def run(
    data: ExperimentData | str,
    victim: VictimSpec | str | Callable[[], nn.Module],
    attack: str | Attack,
    fraction: float,
    *,
    defense: str | Defense | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    defense_options: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    cache: ArtifactCache | str | Path | None = None,
    progress: bool = True,
    injection: str = "add",
) -> RunResult:
    """The whole protocol: pretrain → attack → retrain (→ defend), as ``poisonlab run`` does.

    Args:
        data: as in :func:`poison`.
        victim: as in :func:`poison`.
        attack: as in :func:`poison`.
        fraction: as in :func:`poison`.
        defense: optionally a defense (name or object) judged after the test stage: it scores
            D_tr ∪ poisons, removes the most suspicious, retrains; the result's ``defended`` holds its
            :class:`DefenseResult` (``defended_accuracy``, precision / recall / ROC-AUC).
        defense_options: the defense's options, with a name.
        out: a directory for the artifacts (``result.json``, ``poisons.npz``, weights as safetensors,
            ``poisons.png``); ``None`` writes nothing.
        seed: as in :func:`poison`.
        options: as in :func:`poison`.
        cache: as in :func:`poison`.
        progress: as in :func:`poison`.
        injection: ``"add"`` (D_tr ∪ poisons, the protocol) or ``"replace"`` (each poison in place of
            its source point, the unlearnable-examples threat model).

    Returns:
        A :class:`RunResult`: ``clean_accuracy``, ``poisoned_accuracy``, ``accuracy_drop`` (points),
        ``n_poison``, ``attack_seconds``, ``total_seconds``, ``attack_info``, ``config``, …;
        ``to_dict()`` is the ``result.json`` record (``RunResult.load(out)`` reads it back).
    """
    seed = _seed(seed)
    atk = _attack(attack, options)
    dfn = _defense(defense, defense_options) if defense is not None else None
    d = _data(data, seed)
    spec = _bound(_victim(victim), d, seed)
    if dfn is not None:
        dfn.check_supported(d.train, Victim(spec, seed))
    config = {"dataset": d.name, "model": spec.model, "attack": atk.name, "fraction": fraction, "seed": seed,
              "injection": injection, "defense": dfn.name if dfn is not None else None, "device": spec.recipe.device,
              "recipe_description": spec.recipe.describe()}
    folder = None if out is None else check_output_dir(out, "out")  # a file in the way fails now, not after the run
    result = run_experiment(d, spec, atk, fraction, seed=seed, injection=injection, defense=dfn, cache=as_cache(cache),
                            progress=progress, report=run_messages(_logger(None, progress)), config=config)
    return result if folder is None else write_run(folder, result, d.train)


def _check_spec(spec: Any, function: str) -> None:
    if not isinstance(spec, RunSpec):
        raise ConfigError(f"{function}(spec): expected a poisonlab.RunSpec, got {type(spec).__name__}")


def _logger(log: Callable[[str], None] | None, progress: bool) -> Callable[[str], None]:
    """``log``, or the stage messages on standard error with ``progress`` (nothing without)."""
    return log or (_log if progress else (lambda _m: None))


def _log(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def validate(poisons: PoisonSet, data: ExperimentData) -> PoisonSet:
    """Check a poison set (from anywhere: a file, another library) against ``data``: one input's
    shape, finite values inside ``data.bounds``, labels in range, source indices in D_tr. Returns
    the poisons on the CPU; raises :class:`~poisonlab.errors.ContractError` on the first violation."""
    return _validate(poisons, data)


# ---------------------------------------------------------------------------- defend
def defend(
    data: ExperimentData | str,
    poisons: PoisonSet,
    victim: VictimSpec | str | Callable[[], nn.Module],
    defense: str | Defense,
    *,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: bool = False,
    cache: ArtifactCache | str | Path | None = None,
) -> DefenseResult:
    """Judge ``defense`` on D_tr ∪ ``poisons``: per-point scores, the kept mask, detection metrics.

    The defender sees the poisoned training set (not the mask), the victim's spec and seed, and D_v
    as a trusted clean reference set. The victim is trained on D_tr ∪ poisons (what the defender
    receives), the defense scores every point and removes ``poison_count(fraction, N)`` of them (or,
    for a training-time defense, changes the training), and the victim is retrained on the rest.

    Args:
        data: the data the poisons were made for.
        poisons: from :func:`poison` (checked against ``data`` first).
        victim: as in :func:`poison`.
        defense: a registered defense name (``poisonlab.defenses.DEFENSES.names()``) or a ``Defense``.
        options: the defense's options with a name (e.g. ``{"fraction": 0.05}``).
        seed: seeds the trainings and the defense.
        progress: progress bars.
        cache: an :class:`~poisonlab.cache.ArtifactCache` or a directory: the victim trained on
            D_tr ∪ poisons is re-used from (and stored in) it, e.g. the one :func:`run` trained on
            the same poisons with the same cache, so several defenses of one poison set pay for
            that training once; ``None`` (default): trained here.

    Returns:
        A :class:`DefenseResult`: ``scores``, ``keep``, ``is_poison`` (per point of D_tr ∪ poisons),
        ``precision``, ``recall``, ``roc_auc``, ``n_removed``, ``poisoned_accuracy``,
        ``defended_accuracy``, ``info``, ``seconds``; no clean victim is trained, so ``clean_accuracy``
        and ``defended_drop`` are None.
    """
    seed = _seed(seed)
    dfn = _defense(defense, options)
    d = _data(data, seed)
    spec = _bound(_victim(victim), d, seed)
    poisons = _validate(poisons, d)
    dfn.check_supported(d.train, Victim(spec, seed))
    mixed = PoisonedDataset.combine(d.train, poisons)
    vic = Victim(spec, seed)
    poisoned_model, _ = train_poisoned(mixed.dataset, spec, seed, cache=as_cache(cache),
                                       progress="train on D_tr ∪ D_p" if progress else False)
    return run_defense(dfn, mixed, vic, poisoned_model, d.val, d.test, seed=seed, progress=progress)


# ---------------------------------------------------------------------------- threshold
def threshold(
    data: ExperimentData | str,
    victim: VictimSpec | str | Callable[[], nn.Module],
    target: nn.Module | Mapping[str, torch.Tensor] | str | Path,
    *,
    fraction: float | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    cache: ArtifactCache | str | Path | None = None,
    progress: bool = False,
) -> ThresholdResult:
    """How much poison reaching ``target`` needs — without crafting any (thesis ch. 3).

    Args:
        data: as in :func:`poison`.
        victim: as in :func:`poison`.
        target: the model the attacker wants retraining to produce: an ``nn.Module`` of the victim's
            architecture, its state dict, a ``.safetensors`` file, or the name of a target maker
            (:data:`poisonlab.attacks.targets.TARGETS`), made from the clean-trained victim with
            ``options``: ``"gradpc"`` (corrupt it with GradPC, e.g. ``{"eps_w": 0.5}``) or
            ``"reachable"`` (linear softmax victims: the most damaging target found whose box gauge
            τ_gauge stays ≤ ``limit``·``fraction``, e.g. ``{"steps": 20}``; needs ``fraction``).
        fraction: optionally a poison fraction to check against the thresholds (required, and the
            fraction the target is made for, with ``"reachable"``).
        seed: as in :func:`poison`.
        options: the maker's options when ``target`` names one.
        cache: as in :func:`poison`.
        progress: as in :func:`poison`.

    Returns:
        A :class:`ThresholdResult`: ``tau`` (the cross-entropy threshold, poisons per clean point, for the last layer
        of a network), ``min_poisons``; for a linear softmax victim with finite bounds also
        ``tau_box``, ``tau_gauge`` (the exact box gauge), ``min_poisons_box`` and the gauge's label
        mix — ``None`` where they do not apply, with the reason in ``box_not_applicable``; with ``fraction``,
        ``fraction_passes`` (and ``fraction_passes_gauge``): whether that fraction passes each
        necessary condition (False: *no* poison set of that size can produce the target).
    """
    from .protocol.reachability import resolve_target, threshold_report

    seed = _seed(seed)
    if fraction is not None:
        from .data import check_fraction

        check_fraction(fraction)
    d = _data(data, seed)
    spec = _bound(_victim(victim), d, seed)
    c = as_cache(cache)
    model, clean, info = resolve_target(target, d, spec, seed, options=options, fraction=fraction, cache=c,
                                         progress=progress)
    return threshold_report(model, d, fraction=fraction, clean=clean, target_info=info)


# ---------------------------------------------------------------------------- from a run spec (YAML, the CLI, sweeps)
def run_spec(spec: RunSpec, *, progress: bool = True, log: Callable[[str], None] | None = None) -> RunResult:
    """The whole protocol for a :class:`~poisonlab.protocol.config.RunSpec` — the frozen spec that
    ``poisonlab run``, YAML files (``RunSpec.from_yaml``) and sweeps build — as ``poisonlab run`` does:
    the dataset loaded by name (``spec.data_dir``), the victim with the spec's whole recipe, poisons
    re-used from ``spec.poisons`` if given, the artifacts written to ``spec.out`` (default
    ``spec.default_out()``), the clean victim cached in ``spec.cache_dir``.

    The attack, defense and their options are checked before any work. ``log`` receives the stage
    messages (``None``: standard error with ``progress``, nothing without). Returns the
    :class:`RunResult` (``to_dict()`` is the ``result.json`` record)."""
    from .protocol.runner import run_protocol

    _check_spec(spec, "run_spec")
    return run_protocol(spec, progress=progress, log=_logger(log, progress))


def make_target(
    spec: RunSpec,
    target: str = "gradpc",
    *,
    fraction: float = 0.03,
    options: Mapping[str, Any] | None = None,
    clean: str | Path | None = None,
    out: str | Path = "target.safetensors",
    progress: bool = False,
) -> dict[str, Any]:
    """Make a target model for ``spec`` (its dataset, victim and recipe, seed and cache) and save it,
    as ``poisonlab target`` does; the file feeds :func:`threshold` and ``gc`` (``-A target=FILE``).

    Args:
        spec: a :class:`~poisonlab.protocol.config.RunSpec` (its attack keys are not used).
        target: a registered target maker (:data:`poisonlab.attacks.targets.TARGETS`): ``"gradpc"``
            (GradPC parameter corruption), ``"reachable"`` (linear softmax victims) or a plugin's.
        fraction: the poison fraction in (0, 1] a maker made for a poisoning problem (``"reachable"``)
            makes the target for.
        options: the maker's options (its config class, e.g. ``{"eps_w": 0.5}``).
        clean: weights (``.safetensors``) of the clean victim to start from instead of training it.
        out: where the target is saved (safetensors, with its model, stage and the maker's metadata).
        progress: progress bars.

    Returns:
        The summary ``poisonlab target`` prints: ``dataset``, ``model``, ``target``, ``out``
        (``fraction`` for makers made for a poisoning problem), ``clean_test_accuracy``,
        ``target_test_accuracy`` (%), the maker's reported info and ``cache``.

    The maker, ``fraction`` and ``options`` are checked before any work (:class:`ConfigError`), the
    maker's conditions on the victim before any training (:class:`~poisonlab.errors.UnsupportedError`).
    """
    from .protocol.target_model import make_target_file

    _check_spec(spec, "make_target")
    return make_target_file(spec, target, fraction=fraction, options=options, clean=clean, out=out, progress=progress)


def transfer(
    spec: RunSpec,
    surrogates: Sequence[str],
    targets: Sequence[str],
    *,
    model_options: Mapping[str, Mapping[str, Any]] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Transferability (thesis §2.6.5, Table 2.9), as ``poisonlab transfer`` does: ``spec``'s attack is
    crafted against each surrogate model, and each target model is retrained on those poisons.

    Args:
        spec: a :class:`~poisonlab.protocol.config.RunSpec` (dataset, attack and options, fraction,
            seed, recipe; its model is replaced by each surrogate and target; no defense).
        surrogates: registered victim names the attack is crafted against.
        targets: registered victim names retrained on the poisons.
        model_options: per model name, its options (e.g. ``{"nn": {"hidden": [256]}}``).
        out: the directory of the runs and ``transfer.json`` (default
            ``runs/transfer-<dataset>-<attack>-f<fraction>-s<seed>``).
        progress: progress bars.
        log: receives the stage messages (``None``: standard error with ``progress``, nothing without).

    Returns:
        The ``transfer.json`` record: ``accuracy_drop[s][t]`` (points), ``clean_accuracy``,
        ``poisoned_accuracy``, ``runs`` (each pair's run directory), ``config``. Every model name is
        checked before any work.
    """
    from .protocol.transfer import run_transfer

    _check_spec(spec, "transfer")
    opts = {name: dict(o) for name, o in (model_options or {}).items()}
    return run_transfer(spec, list(surrogates), list(targets), model_options=opts, out=out, progress=progress,
                        log=_logger(log, progress))


def threshold_spec(
    spec: RunSpec,
    target: str = "gradpc",
    *,
    fraction: float = 0.03,
    options: Mapping[str, Any] | None = None,
    clean: str | Path | None = None,
    save_target: str | Path | None = None,
    progress: bool = False,
) -> ThresholdResult:
    """:func:`threshold` for a :class:`~poisonlab.protocol.config.RunSpec` (its dataset, victim and
    recipe, seed and cache), as ``poisonlab threshold`` does.

    ``target`` is a registered target maker (made from the clean victim with ``options``; ``clean``:
    weights of the clean victim to start from instead of training it) or a ``.safetensors`` file;
    ``fraction`` in (0, 1] is checked against the thresholds (and is the fraction ``"reachable"``
    makes its target for); ``save_target``: also save the target there. The result's
    ``target_info`` is the maker's reported info (its ``report_keys``) and ``cache``, or a file's
    ``source``. Everything is checked before any work."""
    from .protocol.target_model import threshold_of_spec

    _check_spec(spec, "threshold_spec")
    return threshold_of_spec(spec, target, fraction=fraction, options=options, clean=clean, save_to=save_target,
                             progress=progress)


def sweep(
    grid: str | Path | Grid,
    *,
    out: str | Path | None = None,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    cache: str | Path | bool = True,
    retry_failed: bool = False,
    mlflow: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
) -> SweepSummary | SweepPlan:
    """A grid of protocol runs, resumably, locally or on Ray, as ``poisonlab sweep`` does.

    Args:
        grid: a YAML grid file (``base`` + ``cases`` × ``grid``; see ``examples/``) or a
            :class:`~poisonlab.sweeps.Grid` (``poisonlab.sweeps.expand`` of a parsed one).
        out: the sweep directory (``results.jsonl``, ``runs/<run id>/``, ``progress.json``);
            default ``sweeps/<grid name>`` under the working directory.
        backend: ``"local"`` (processes on this machine) or ``"ray"`` (the ``ray`` extra).
        workers: local: parallel worker processes (default 1; 0 = inside this process); Ray
            without ``address``: runs at once on the local Ray instance (default: one per CPU).
        address: a Ray cluster address (``backend="ray"`` only; default: a local Ray instance).
        overrides: run keys set for every run, as if the grid's ``base`` said them (``device`` and
            the recipe keys: ``epochs``, ``optimizer``, ``lr`` …); a case or axis of the grid that
            sets one of them too is an error. Only with a grid file.
        cache: the artifact cache of clean victims, targets and generators: True (default) for
            ``<cache root>/artifacts``, a directory, or False to train every clean victim anew.
        retry_failed: run again the runs recorded as failed (by default they count as finished).
        mlflow: also log each finished run to MLflow at this tracking URI (experiment = the grid's
            name; best effort: a failed log is a warning, ``results.jsonl`` holds the row).
        dry_run: validate and plan only: return a :class:`~poisonlab.sweeps.SweepPlan` (the runs
            that would run, ``todo``, and those that would be skipped, ``done``) and run nothing.
        progress: a progress bar with each finished run's line.

    Returns:
        a :class:`~poisonlab.sweeps.SweepSummary` (``total``, ``skipped``, ``ok``, ``failed``,
        ``directory``), or with ``dry_run`` the :class:`~poisonlab.sweeps.SweepPlan`. A failed run
        does not stop the sweep: it is recorded with its error and counted in ``failed``.

    Every argument and every run of the grid (names, options, the device) is checked before any
    run starts (:class:`~poisonlab.errors.ConfigError`). Calling again with the same grid and
    ``out`` resumes: runs with a result are skipped (also after the process was killed).
    """
    from .paths import artifact_dir
    from .sweeps import MlflowLogger, load_grid, plan, run_sweep

    for name, flag in (("retry_failed", retry_failed), ("dry_run", dry_run), ("progress", progress)):
        if not isinstance(flag, bool):
            raise ConfigError(f"sweep({name}=...): expected True or False, got {flag!r}")
    if backend not in ("local", "ray"):
        raise ConfigError(f"sweep(backend=...): expected 'local' or 'ray', got {backend!r}")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise ConfigError(f"sweep(workers=...): expected an integer >= 0 or None, got {workers!r}")
    if address is not None and (not isinstance(address, str) or backend != "ray"):
        raise ConfigError(f"sweep(address={address!r}): a Ray cluster address (a string) needs backend='ray'")
    if out is not None and not isinstance(out, (str, Path)):
        raise ConfigError(f"sweep(out=...): expected a directory (str or Path) or None, got {type(out).__name__}")
    if not isinstance(cache, (bool, str, Path)):
        raise ConfigError(f"sweep(cache=...): expected True, False or a directory, got {type(cache).__name__}")
    if mlflow is not None and (not isinstance(mlflow, str) or not mlflow):
        raise ConfigError(f"sweep(mlflow=...): expected a tracking URI such as 'sqlite:///mlflow.db', got {mlflow!r}")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"sweep(overrides=...): expected a mapping of run keys to values, got {type(overrides).__name__}")
    if isinstance(grid, (str, Path)):
        g = load_grid(grid, dict(overrides or {}), backend)
    elif isinstance(grid, Grid):
        if overrides:
            raise ConfigError("sweep(overrides=...): only with a grid file; set the keys in the grid's base and expand it again")
        g = grid
    else:
        raise ConfigError(f"sweep(grid): expected a YAML file (str or Path) or a poisonlab.sweeps.Grid, got {type(grid).__name__}")
    directory = Path(out if out is not None else Path("sweeps") / g.name)
    cache_dir = None if cache is False else str(artifact_dir(None if cache is True else cache).resolve())
    if dry_run:
        todo, _ = plan(g, directory, cache_dir=cache_dir, retry_failed=retry_failed)
        return SweepPlan(g, directory.resolve(), tuple(todo))
    on_row = None
    if mlflow is not None:
        logger = MlflowLogger(mlflow, g.name, directory)

        def on_row(row: dict[str, Any]) -> None:
            try:
                logger.log_row(row, directory)
            except Exception as exc:  # tracking is best effort; results.jsonl already holds the row
                _log(f"poisonlab: warning: MLflow logging of run {row['run_id']} failed: {exc}")

    return run_sweep(g, directory, backend=backend, workers=workers, address=address, cache_dir=cache_dir,
                     retry_failed=retry_failed, progress=progress, on_row=on_row)


# ---------------------------------------------------------------------------- disguises and pre-training (chapters 4, 5)
def disguise(
    copyrighted: str | Path,
    base: str | Path,
    *,
    vae: str = "tiny:cifar10:sd",
    variant: str = "unbounded",
    options: Mapping[str, Any] | None = None,
    size: int | None = None,
    out: str | Path = "runs/disguise",
    data_dir: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> CraftedDisguise:
    """Craft a disguise of a copyrighted image on a base image against a latent autoencoder, reveal
    it and score it (thesis chapter 5; Lu et al., ICML 2024), as ``poisonlab disguise`` does.

    The disguise x_d looks like the base image x_b but its latent E(x_d) matches the copyrighted
    image's E(x_c), so a latent diffusion model trained on it learns x_c; the reveal D(E(x_d)) shows
    what the model sees.

    Args:
        copyrighted: image file of the copyrighted work x_c (PNG, JPEG, ...; grey or colour).
        base: image file of the base image x_b the disguise should look like.
        vae: ``"taef2"`` (the shipped pretrained tiny autoencoder of FLUX.2's latent space, 256x256 by
            default; not Stable Diffusion's VAE), a local AutoencoderKL / Stable Diffusion pipeline
            directory, or ``"tiny:<dataset>[:small|sd]"`` (a small VAE trained here once and cached;
            default ``"tiny:cifar10:sd"``, the Stable-Diffusion-like 48x one).
        variant: ``"unbounded"``, ``"bounded"`` (L∞ radius 32/255), ``"flip"`` (robust to a
            horizontal flip) or ``"evasive"`` (evades the encoder-decoder examination).
        options: overrides of the variant's options
            (:class:`~poisonlab.generative.disguise.DisguiseConfig`: ``alpha``, ``radius``, ``steps``,
            ``lr``, ``init_noise``, ...), e.g. ``{"alpha": 0.02, "steps": 200}``.
        size: resize both images to ``size`` x ``size`` (a multiple of the VAE's downsampling
            factor); ``None``: the VAE's sample size.
        out: the output folder: ``disguise.png``, ``reveal.png``, ``grid.png``, ``metrics.json``.
        data_dir: data directory for training a tiny VAE (default ``$POISONLAB_DATA``).
        seed: seeds the tiny VAE's training and the ``init_noise`` start.
        device: where the VAE runs (``"cpu"``, ``"cuda"``, ``"auto"``, ...).
        progress: progress bars (the VAE's training, the crafting).

    Returns:
        A :class:`~poisonlab.generative.disguise_files.CraftedDisguise`: ``metrics`` (latent
        distance to E(x_c) and to E(x_b), SSIM / LPIPS to the base, the reveal's SSIM to x_c, ...),
        ``detector_scores``, ``files``, the ``disguise`` and ``reveal`` tensors; ``to_dict()`` is the
        ``metrics.json`` record.

    Every input is checked before any work — loading or training the VAE can take minutes — (the
    variant and its options, the device, the VAE spec, both image files, ``out``, and ``size``
    against the VAE's geometry, read without loading its weights); the errors
    (:class:`ConfigError`, :class:`~poisonlab.errors.DataError`) name each input by the command's
    flag (``--base``, ``--size``, ...).
    """
    from .devices import resolve_device
    from .generative import vae as vae_module  # get_vae looked up at the call: tests replace it to prove the checks come first
    from .generative.disguise import variant_config
    from .generative.disguise_files import check_out_folder, check_path, check_size, craft_and_write, vae_geometry
    from .generative.images import open_image
    from .validation import check_bool, check_int

    # ---- every check before any work (the VAE may train for minutes)
    if not isinstance(variant, str):
        raise ConfigError(f"--variant must be a variant name, got {variant!r}")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"disguise options must be a mapping of option names to values, got {options!r}")
    cfg = variant_config(variant, **dict(options or {}))
    try:
        dev = resolve_device(device)
    except ConfigError as exc:
        raise ConfigError(f"--device: {exc}") from None
    if not isinstance(vae, str):
        raise ConfigError(f"--vae must be a VAE spec (a string), got {vae!r}")
    geometry = vae_geometry(vae)
    size = check_size(size, geometry)
    img_c = open_image(check_path(copyrighted, "--copyrighted"), "--copyrighted")
    img_b = open_image(check_path(base, "--base"), "--base")
    folder = check_out_folder(out)
    if data_dir is not None:
        check_path(data_dir, "--data-dir")
    check_int(seed, "--seed", minimum=0)
    check_bool(progress, "progress")

    model = vae_module.get_vae(vae, data_dir=data_dir, seed=seed, progress=progress, device=dev)
    return craft_and_write(model, img_c, img_b, variant=variant, config=cfg, size=size or geometry.sample_size, out=folder,
                           seed=seed, progress=progress)


def train_vae(
    dataset: str = "cifar10",
    *,
    preset: str = "sd",
    epochs: int | None = None,
    num_images: int | None = None,
    data_dir: str | Path | None = None,
    retrain: bool = False,
    save: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> TrainedVAE:
    """Train (or load from the cache) the small AutoencoderKL that :func:`disguise` uses offline
    (``vae="tiny:<dataset>:<preset>"``), and score its reconstructions, as ``poisonlab vae`` does.

    Args:
        dataset: the training images: a registered dataset or a ``.npz`` file (28x28 sets are padded
            to 32x32; grey sets give a one-channel VAE).
        preset: ``"small"`` (32x32 -> 4x8x8, 12x compression) or ``"sd"`` (Stable-Diffusion-like f = 8,
            4 latent channels: 32x32 -> 4x4x4, 48x; what :func:`disguise` uses by default).
        epochs: training epochs (``None``: the preset's).
        num_images: number of training images (``None``: the preset's).
        data_dir: data directory (default ``$POISONLAB_DATA``).
        retrain: train again even if cached.
        save: also copy the VAE to this folder (diffusers layout, safetensors), e.g. for
            ``disguise(vae=<folder>)``.
        seed: seeds the choice of training images, the initial weights and the training.
        device: where to train and evaluate the VAE: ``"auto"`` (CUDA when available), ``"cpu"``,
            ``"cuda"``, ``"cuda:N"``.
        progress: a progress bar over the training epochs.

    Returns:
        A :class:`~poisonlab.generative.vae_quality.TrainedVAE`: ``source`` (``tiny:<key>``),
        ``cache_dir``, ``latent_shape``, ``compression``, ``scaling_factor``, the reconstruction SSIM
        on the first 500 test images (``test_ssim_mean``, ``test_ssim_min``), ``saved`` and the model
        (``vae``).

    Every argument (the dataset name, the preset and recipe, the device, ``save``, ...) is checked
    before any work (:class:`ConfigError`, :class:`~poisonlab.errors.DataError`).
    """
    import os

    from .data.sources import check_dataset_name
    from .devices import resolve_device
    from .generative import vae as vae_module  # tiny_vae looked up at the call (tests replace it)
    from .generative.vae_quality import score_vae
    from .options import config_to_dict
    from .validation import check_bool, check_int

    what = "train_vae"
    if not isinstance(dataset, str):
        raise ConfigError(f"{what}: dataset must be a registered name or a .npz path, got {dataset!r}")
    check_dataset_name(dataset, what)
    if not isinstance(preset, str):
        raise ConfigError(f"{what}: preset must be one of {vae_module.VAE_PRESETS.names()}, got {preset!r}")
    recipe = vae_module.VAE_PRESETS.get(preset).recipe
    given = {k: v for k, v in (("epochs", epochs), ("num_images", num_images)) if v is not None}
    recipe = type(recipe).from_dict({**config_to_dict(recipe), **given})
    dev = resolve_device(device)  # an impossible device fails here, before anything is trained
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ConfigError(f"{what}: data_dir must be a directory path or None, got {data_dir!r}")
    check_bool(retrain, "retrain", what)
    save_dir = None if save is None else check_output_dir(save, "save", what)
    check_int(seed, "seed", what, minimum=0)
    check_bool(progress, "progress", what)

    model = vae_module.tiny_vae(dataset, data_dir=data_dir, recipe=recipe, seed=seed, retrain=retrain, preset=preset,
                                device=dev, progress=progress)
    return score_vae(model, dataset, data_dir=data_dir, save=save_dir)


def pretrain_extractor(
    config: PretrainConfig | Mapping[str, Any] | None = None,
    *,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    **options: Any,
) -> PretrainedExtractor:
    """Pre-train a feature extractor (SimCLR or supervised; thesis chapter 4) on a dataset's training
    images and cache it as safetensors, as ``poisonlab pretrain`` does; the same config is trained
    once and found in the cache afterwards.

    Args:
        config: a :class:`~poisonlab.pretrain.PretrainConfig` (``pl.PretrainConfig``), a mapping of
            its options, or ``None`` (its defaults): ``dataset``, ``method`` (``"simclr"`` or
            ``"supervised"``), ``encoder`` (``"conv"`` or ``"resnet18"``), ``encoder_options``,
            ``n_images`` (a seeded subset; 0 = all), ``epochs``, ``batch_size``, ``lr`` (Adam's for
            SimCLR, SGD's for supervised), ``temperature``, ``projection_dim``, ``flip``, ``seed``.
        data_dir: data directory (default ``$POISONLAB_DATA``).
        out: write the extractor to this file instead of the cache
            (``<cache root>/extractors/<key>.safetensors``).
        device: where to train (``"auto"``: CUDA when available).
        force: train again even if the file is there.
        progress: progress bars.
        **options: options of the config that replace its values, e.g. ``epochs=1, n_images=256``.

    Returns:
        A :class:`~poisonlab.pretrain.result.PretrainedExtractor`: ``path``, ``key`` (use it as the
        victim ``linear_probe:<key>`` or ``fine_tune:<key>``), ``cached``, ``metadata``;
        ``to_dict()`` is what ``poisonlab pretrain --json`` prints.

    The config and its options, the dataset name, the encoder, the device and the paths are checked
    before any work (:class:`ConfigError`, :class:`~poisonlab.errors.DataError`).
    """
    import os

    from .data.sources import check_dataset_name
    from .devices import resolve_device
    from .models.extractors import ENCODERS
    from .options import config_to_dict
    from .pretrain import store  # get_extractor looked up at the call (tests replace it)
    from .validation import check_bool

    what = "pretrain"
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, PretrainConfig):
        base = config_to_dict(config)
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise ConfigError(f"{what}: config must be a PretrainConfig, a mapping of its options or None, "
                          f"got {type(config).__name__}")
    cfg = PretrainConfig.from_dict({**base, **options})
    if not isinstance(cfg.dataset, str):
        raise ConfigError(f"{what}: dataset must be a registered name or a .npz path, got {cfg.dataset!r}")
    check_dataset_name(cfg.dataset, what)
    ENCODERS.get(cfg.encoder)  # an unknown encoder raises, naming the registered ones
    resolve_device(device)
    for name, path in (("data_dir", data_dir), ("out", out)):
        if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(path)):
            raise ConfigError(f"{what}: {name} must be a path or None, got {path!r}")
    if out is not None and Path(out).is_dir():
        raise ConfigError(f"{what}: out {str(out)!r} is a directory; give the .safetensors file to write")
    check_bool(force, "force", what)
    check_bool(progress, "progress", what)

    path, meta = store.get_extractor(cfg, data_dir=None if data_dir is None else str(data_dir), out=out, device=device,
                                     progress="pretrain" if progress else False, force=force)
    return PretrainedExtractor.from_lookup(path, meta)
