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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..attacks import build_attack
from ..data import PoisonedDataset, load_dataset, poison_count, split_train_val
from ..data.types import AttackData, DataBundle
from ..models.victims import resolve_victim
from ..reporting.grids import poison_grid
from ..seeding import torch_generator
from ..training import TrainConfig, Victim, VictimSpec, accuracy
from .artifacts import load_poisons, save_model, save_poisons, write_json
from .config import RunConfig

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


def run_protocol(cfg: RunConfig, *, progress: bool = True, log: Log = _stderr) -> dict[str, Any]:
    """Run the three stages, write the artifacts to ``cfg.out`` and return the result record."""
    t_start = time.perf_counter()
    out = Path(cfg.out or cfg.default_out())
    attack = build_attack(cfg.attack, cfg.attack_options)  # validates options before any work
    prep = prepare(cfg)
    data, spec = prep.data, prep.spec
    n_poison = poison_count(cfg.fraction, len(data.train))
    log(
        f"[poisonlab] {cfg.dataset}: |D_tr|={len(data.train)} |D_v|={len(data.val)} |test|={len(prep.bundle.test)}; "
        f"model {cfg.model}, {spec.recipe.epochs} epochs, batch {spec.recipe.batch_size}; "
        f"attack {cfg.attack}, fraction {cfg.fraction:g} -> {n_poison} poisons"
    )

    log("[1/3] pretrain: training the victim on D_tr")
    clean_model = spec.train(data.train, cfg.seed, progress="pretrain" if progress else False)
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
        poisons = attack.poison(data, victim, cfg.fraction, generator=torch_generator(cfg.seed, "attack"), progress=progress)
    attack_seconds = time.perf_counter() - t_attack

    log("[3/3] test: retraining the victim from scratch on D_tr ∪ D_p")
    mixed = PoisonedDataset.combine(data.train, poisons)
    poisoned_model = victim.retrain(mixed.dataset, progress="retrain" if progress else False)
    acc2 = accuracy(poisoned_model, prep.bundle.test)
    log(f"      poisoned test accuracy acc2 = {acc2:.2f} %")

    out.mkdir(parents=True, exist_ok=True)
    save_poisons(out / "poisons.npz", poisons)
    save_model(out / "victim_clean.safetensors", clean_model, {"model": cfg.model, "stage": "pretrain"})
    save_model(out / "victim_poisoned.safetensors", poisoned_model, {"model": cfg.model, "stage": "retrain"})
    grid_stats = poison_grid(out / "poisons.png", poisons, data.train, title=f"{cfg.attack} on {cfg.dataset}/{cfg.model}")

    result = {
        "dataset": cfg.dataset,
        "model": cfg.model,
        "attack": cfg.attack,
        "fraction": cfg.fraction,
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
        "attack_info": poisons.info,
        "poisonlab_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(victim.device),
        "config": {**cfg.to_dict(), "out": str(out), "attack_options": attack.options(),
                   "recipe": {"lr": spec.recipe.lr, "epochs": spec.recipe.epochs, "batch_size": spec.recipe.batch_size}},
        "artifacts": {"poisons": "poisons.npz", "poison_grid": "poisons.png",
                      "clean_model": "victim_clean.safetensors", "poisoned_model": "victim_poisoned.safetensors"},
    }
    write_json(out / "result.json", result)
    return result
