"""THE protocol runner (thesis §2.5.2): pretrain → attack → test.

1. Pretrain: train the victim on D_tr (70 % of the clean training set), test accuracy ``acc1``.
2. Attack: craft exactly ``poison_count(fraction, |D_tr|)`` points, timed.
3. Test: retrain the victim *from scratch* with the identical recipe and seed on D_tr ∪ D_p,
   test accuracy ``acc2``; drop = acc1 − acc2 in percentage points.

The clean and poisoned retrains share the seed, so they start from the same initial weights
and differ only by the data.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..attacks import build_attack
from ..cache import ArtifactCache, tensor_fingerprint, using
from ..data import PoisonedDataset, load_dataset, poison_count, split_train_val
from ..data.types import AttackData, DataBundle
from ..models.extractors import extractor_fingerprint
from ..models.victims import resolve_victim
from ..reporting.grids import poison_grid
from ..seeding import torch_generator
from ..training import TrainConfig, Victim, VictimSpec, accuracy, resolve_device
from .artifacts import load_poisons, save_model, save_poisons, save_state, write_json
from .config import RunConfig
from .defend import defense_from_config, run_defense

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Prepared:
    """Everything the stages share: data, attacker split and the victim spec."""

    bundle: DataBundle
    data: AttackData
    spec: VictimSpec


def prepare(cfg: RunConfig) -> Prepared:
    """Load the data, split it 70/30 with the run's seed and build the victim spec (validated)."""
    bundle = load_dataset(cfg.dataset, cfg.data_dir)
    data = split_train_val(bundle.train, torch_generator(cfg.seed, "split"))
    recipe = TrainConfig(
        lr=cfg.lr if cfg.lr is not None else TrainConfig.lr,
        epochs=cfg.epochs if cfg.epochs is not None else TrainConfig.epochs,
        batch_size=cfg.batch_size or bundle.default_batch_size,
        device=cfg.device,
    )
    resolve_victim(cfg.model)  # unknown model -> clear error before any work
    spec = VictimSpec(cfg.model, tuple(bundle.train.x.shape[1:]), bundle.train.num_classes, recipe, dict(cfg.model_options))
    spec.build(cfg.seed)  # validates model options
    return Prepared(bundle, data, spec)


def clean_victim_key(cfg: RunConfig, prep: Prepared) -> dict[str, Any]:
    """Everything the clean-trained victim depends on (the cache key of stage 1).

    The data fingerprint hashes D_tr itself, so it covers the dataset file and the split seed (the
    cache adds the source fingerprint, which covers edits of the code that trained it).
    """
    r = prep.spec.recipe
    return {
        "dataset": cfg.dataset, "data": tensor_fingerprint(prep.data.train.x, prep.data.train.y), "split_seed": cfg.seed,
        "model": cfg.model, "model_options": cfg.model_options, "input_shape": list(prep.spec.input_shape),
        "num_classes": prep.spec.num_classes, "recipe": {"lr": r.lr, "epochs": r.epochs, "batch_size": r.batch_size,
        "momentum": r.momentum, "weight_decay": r.weight_decay}, "device": resolve_device(r.device).type, "seed": cfg.seed,
        "poisonlab_version": __version__, "torch_version": torch.__version__,
        **({"extractor_sha256": fp} if (fp := extractor_fingerprint(cfg.model)) else {}),
    }


def pretrain_victim(cfg: RunConfig, prep: Prepared, progress: bool = False) -> tuple[torch.nn.Module, bool]:
    """Stage 1, through the artifact cache when ``cfg.cache_dir`` is set. Returns (model, cache hit)."""
    def build() -> dict[str, torch.Tensor]:
        return prep.spec.train(prep.data.train, cfg.seed, progress="pretrain" if progress else False).state_dict()

    if cfg.cache_dir is None:
        model = prep.spec.train(prep.data.train, cfg.seed, progress="pretrain" if progress else False)
        return model, False
    state, hit = ArtifactCache(cfg.cache_dir).get_or_create("victim_clean", clean_victim_key(cfg, prep), build)
    model = prep.spec.build(cfg.seed)
    model.load_state_dict(state)
    return model.eval(), hit


def run_protocol(cfg: RunConfig, *, progress: bool = True, log: Log = _stderr) -> dict[str, Any]:
    """Run the three stages, write the artifacts to ``cfg.out`` and return the result record."""
    t_start = time.perf_counter()
    out = Path(cfg.out or cfg.default_out())
    attack = build_attack(cfg.attack, cfg.attack_options)  # validates options before any work
    defense = defense_from_config(cfg)
    prep = prepare(cfg)
    data, spec = prep.data, prep.spec
    n_poison = poison_count(cfg.fraction, len(data.train))
    log(
        f"[poisonlab] {cfg.dataset}: |D_tr|={len(data.train)} |D_v|={len(data.val)} |test|={len(prep.bundle.test)}; "
        f"model {cfg.model}, {spec.recipe.epochs} epochs, batch {spec.recipe.batch_size}; "
        f"attack {cfg.attack}, fraction {cfg.fraction:g} -> {n_poison} poisons"
    )

    log("[1/3] pretrain: training the victim on D_tr")
    clean_model, cache_hit = pretrain_victim(cfg, prep, progress)
    if cache_hit:
        log(f"      clean victim loaded from the cache in {cfg.cache_dir}")
    acc1 = accuracy(clean_model, prep.bundle.test)
    clean_state = {k: v.detach().clone() for k, v in clean_model.state_dict().items()}
    victim = Victim(spec, cfg.seed, clean_state)
    log(f"      clean test accuracy acc1 = {acc1:.2f} %")

    t_attack = time.perf_counter()
    if cfg.poisons:
        log(f"[2/3] attack: re-using poisons from {cfg.poisons}")
        poisons = attack._check(load_poisons(cfg.poisons), data, n_poison)
    else:
        log(f"[2/3] attack: {cfg.attack} crafting {n_poison} poisons")
        with using(cfg.cache_dir):  # attacks may cache pretrained parts via poisonlab.cache.cached_state
            poisons = attack.poison(replace(data, injection=cfg.injection), victim, cfg.fraction,
                                    generator=torch_generator(cfg.seed, "attack"), progress=progress)
    attack_seconds = time.perf_counter() - t_attack

    where = "D_tr ∪ D_p" if cfg.injection == "add" else "D_tr with the poisons in place of their sources"
    log(f"[3/3] test: retraining the victim from scratch on {where}")
    mixed = PoisonedDataset.mix(data.train, poisons, cfg.injection)
    poisoned_model = victim.retrain(mixed.dataset, progress="retrain" if progress else False)
    acc2 = accuracy(poisoned_model, prep.bundle.test)
    log(f"      poisoned test accuracy acc2 = {acc2:.2f} %")
    attack_info = {**poisons.info, **attack.assess(poisons, poisoned_model, prep.bundle.test)}

    out.mkdir(parents=True, exist_ok=True)
    save_poisons(out / "poisons.npz", poisons)
    save_model(out / "victim_clean.safetensors", clean_model, {"model": cfg.model, "stage": "pretrain"})
    save_model(out / "victim_poisoned.safetensors", poisoned_model, {"model": cfg.model, "stage": "retrain"})
    for name, state in poisons.states.items():  # e.g. the target model of a model-targeted attack
        save_state(out / f"{name}.safetensors", state, {"model": cfg.model, "stage": f"attack:{name}"})
    grid_stats = poison_grid(out / "poisons.png", poisons, data.train, title=f"{cfg.attack} on {cfg.dataset}/{cfg.model}")
    defended = {}
    if defense is not None:  # defend stage: score D_tr ∪ D_p, filter, retrain, detection metrics
        defended = run_defense(defense, mixed, victim, poisoned_model, data.val, prep.bundle.test, acc1,
                               seed=cfg.seed, out=out, progress=progress, log=log)

    result = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "attack": cfg.attack,
        "fraction": cfg.fraction,
        "injection": cfg.injection,
        "seed": cfg.seed,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(prep.bundle.test),
        "n_poison": len(poisons),
        "clean_accuracy": acc1,
        "poisoned_accuracy": acc2,
        "accuracy_drop": acc1 - acc2,
        "attack_seconds": attack_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "max_perturbation": grid_stats["max_perturbation"],
        "mean_perturbation": grid_stats["mean_perturbation"],
        "attack_info": attack_info,
        "poisonlab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(victim.device),
        "cache": {"victim_clean": None if cfg.cache_dir is None else ("hit" if cache_hit else "miss")},
        "config": {**cfg.to_dict(), "out": str(out), "attack_options": attack.options(),
                   "recipe": {"lr": spec.recipe.lr, "epochs": spec.recipe.epochs, "batch_size": spec.recipe.batch_size}},
        "artifacts": {"poisons": "poisons.npz", "poison_grid": "poisons.png",
                      "clean_model": "victim_clean.safetensors", "poisoned_model": "victim_poisoned.safetensors",
                      **{f"{name}_model": f"{name}.safetensors" for name in poisons.states}},
    }
    if defended:
        result.update(defended)
        result["artifacts"].update(defense_scores="defense_scores.npz", defended_model="victim_defended.safetensors")
    write_json(out / "result.json", result)
    return result
