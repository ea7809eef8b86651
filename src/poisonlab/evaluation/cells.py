"""The cells of an evaluation: sweep jobs (:class:`~poisonlab.sweeps.execute.Job`) that run one
``pl.*`` call each, so ``poisonlab evaluate`` and ``poisonlab sweep`` share one mechanism (the
backends, the coordinator, the resumable ``results.jsonl``).

* :class:`PriceCell` — one clean training of the victim, timed (the cost of every retrain);
* :class:`ProbeCell` — an attack with its work cut down (:mod:`.plan`), timed on the clean victim;
* :class:`AttackCell` — :func:`poisonlab.run` for one (attack, seed);
* :class:`TheoryCell` — :func:`poisonlab.threshold` against the GradPC target for one seed;
* :class:`DefenseCell` — :func:`poisonlab.defend` on an attack cell's poisons.

Each cell is a frozen dataclass of picklable fields: the data by reference (:class:`DataRef`:
a dataset name or ``.npz`` path, split per seed as ``pl.run`` splits it, or a saved
:class:`~poisonlab.data.ExperimentData`), the victim spec and the precomputed JSON that
identifies it. An attack cell's row holds the :class:`~poisonlab.protocol.results.RunResult`'s
record (read back with ``RunResult.from_dict``), a defense cell's the
:class:`~poisonlab.protocol.results.DefenseResult`'s record with the poisoned accuracy.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from ..artifacts import load_poisons, write_atomic
from ..cache import as_cache, tensor_fingerprint
from ..data import from_bundle, load_dataset
from ..data.bounds import Bounds
from ..data.types import Dataset, ExperimentData
from ..training import VictimSpec

# ---------------------------------------------------------------------------- data by reference
#: data loaded in this process, by (file, seed): the cells of one worker load a dataset once
_LOADED: dict[tuple[str, str | None, int], ExperimentData] = {}

DATA_FILE_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "lower", "upper", "meta")


@dataclass(frozen=True)
class DataRef:
    """Where a cell's data comes from.

    ``dataset``: a registered name or a ``.npz`` path (with ``data_dir``), split into D_tr / D_v by
    each cell's seed (as ``pl.run(name, seed=...)`` and ``poisonlab run --seed`` do); or
    ``saved``: an :class:`ExperimentData` written by :func:`save_experiment` (a fixed split, e.g. a
    user's :func:`~poisonlab.data_from_arrays`), identified by ``fingerprint``. ``memory`` holds
    that data in this process (cells run in-process skip the file); it is never pickled.
    """

    dataset: str
    data_dir: str | None = None
    saved: str | None = None
    fingerprint: str | None = None
    memory: ExperimentData | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:  # to a worker process: by file, never the tensors
        return {**self.__dict__, "memory": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def fixed_split(self) -> bool:
        return self.saved is not None or self.memory is not None

    def load(self, seed: int) -> ExperimentData:
        if self.memory is not None:
            return self.memory
        key = (self.saved or self.dataset, self.data_dir, -1 if self.saved else seed)
        if key not in _LOADED:
            if len(_LOADED) > 4:
                _LOADED.clear()
            _LOADED[key] = (load_experiment(self.saved) if self.saved
                            else from_bundle(load_dataset(self.dataset, self.data_dir), seed))
        return _LOADED[key]

    def describe(self) -> dict[str, Any]:
        """The data's identity (``data_dir`` is where, not what: not part of a cell's id)."""
        out: dict[str, Any] = {"dataset": self.dataset, "data_dir": self.data_dir}
        if self.fixed_split:
            out["data_sha256"] = self.fingerprint
        return out


def experiment_fingerprint(data: ExperimentData) -> str:
    """sha256 of D_tr, D_v, the test set and the bounds."""
    parts = (data.train.x, data.train.y, data.val.x, data.val.y, data.test.x, data.test.y, data.bounds.lower.reshape(-1),
             data.bounds.upper.reshape(-1))
    return tensor_fingerprint(*parts)


def save_experiment(path: str | Path, data: ExperimentData) -> Path:
    """Write ``data`` (its split as is) to an npz (no pickle) that :func:`load_experiment` reads back."""
    meta = np.array([data.name, str(data.num_classes), str(data.default_batch_size), str(data.split_seed)])
    arrays = {"x_train": data.train.x, "y_train": data.train.y, "x_val": data.val.x, "y_val": data.val.y,
              "x_test": data.test.x, "y_test": data.test.y, "lower": data.bounds.lower, "upper": data.bounds.upper}
    values: dict[str, np.ndarray] = {"meta": meta, **{k: v.detach().cpu().numpy() for k, v in arrays.items()}}
    buf = io.BytesIO()
    np.savez(buf, **values)  # type: ignore[arg-type]  # numpy's stub types the first keyword
    write_atomic(path, buf.getvalue())
    return Path(path)


def load_experiment(path: str | Path) -> ExperimentData:
    with np.load(path, allow_pickle=False) as z:
        a = {k: torch.from_numpy(np.array(z[k])) for k in DATA_FILE_KEYS if k != "meta"}
        name, classes, batch, split = (str(v) for v in z["meta"])
    bounds = Bounds(a["lower"], a["upper"])
    train, val, test = (Dataset(a[f"x_{s}"], a[f"y_{s}"], int(classes), name, bounds) for s in ("train", "val", "test"))
    return ExperimentData(train, val, test, name=name, default_batch_size=int(batch), split_seed=int(split))


# ---------------------------------------------------------------------------- the cells
@dataclass(frozen=True, kw_only=True)
class Cell:
    """What every cell shares: data, victim, seed, fraction and where its artifacts go."""

    kind: ClassVar[str] = ""
    data: DataRef
    victim: VictimSpec
    #: JSON identity of the victim (architecture, options, full recipe; a user module's class,
    #: structure and initial weights), computed once by the evaluation
    victim_key: dict[str, Any]
    seed: int
    fraction: float
    out: str | None = None
    cache_dir: str | None = None

    @property
    def device(self) -> str:
        return self.victim.recipe.device

    def to_dict(self) -> dict[str, Any]:
        return {"cell": self.kind, **self.data.describe(), "victim": self.victim_key, "seed": self.seed,
                "fraction": self.fraction, **self._fields(), "out": self.out, "cache_dir": self.cache_dir}

    def _fields(self) -> dict[str, Any]:
        return {}

    def label(self) -> str:
        return f"{self.kind} s={self.seed}"

    def execute(self, on_stage: Callable[[str], None]) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class AttackCell(Cell):
    """One attack on one seed: ``pl.run`` (pretrain through the cache, attack, retrain)."""

    kind: ClassVar[str] = "attack"
    name: str  # the row's label (an attack, or a variant such as "gc_reachable")
    attack: str
    options: dict[str, Any] = field(default_factory=dict)

    def _fields(self) -> dict[str, Any]:
        return {"name": self.name, "attack": self.attack, "attack_options": self.options}

    def label(self) -> str:
        return f"{self.name} s={self.seed}"

    def execute(self, on_stage: Callable[[str], None]) -> dict[str, Any]:
        from .. import api

        on_stage("attack")
        return api.run(self.data.load(self.seed), self.victim, self.attack, self.fraction, seed=self.seed,
                       options=self.options, out=self.out, cache=self.cache_dir, progress=False).to_dict()


@dataclass(frozen=True, kw_only=True)
class PriceCell(Cell):
    """One clean training of the victim on D_tr, timed: the price of each retrain (and pretrain)."""

    kind: ClassVar[str] = "price"

    def execute(self, on_stage: Callable[[str], None]) -> dict[str, Any]:
        from dataclasses import replace

        from ..protocol.runner import train_clean

        on_stage("train")
        d = self.data.load(self.seed)
        spec = self.victim.for_data(d.input_shape, d.num_classes, d.default_batch_size)
        # one untimed epoch first: the process's first training pays one-off costs (kernels, allocator)
        replace(spec, recipe=replace(spec.recipe, epochs=min(1, spec.recipe.epochs))).train(d.train, self.seed)
        cache = as_cache(self.cache_dir)
        t0 = time.perf_counter()
        hit = False
        if cache is not None:  # the clean victim goes into the cache for the cells of this seed
            _, hit = train_clean(d, spec, self.seed, cache=cache)
        if cache is None or hit:  # trained before: time a training anyway (the price is what was asked)
            t0 = time.perf_counter()
            spec.train(d.train, self.seed)
        return {"train_seconds": time.perf_counter() - t0, "n_train": len(d.train)}


@dataclass(frozen=True, kw_only=True)
class ProbeCell(Cell):
    """An attack with its work cut down, timed on the clean victim of this seed (through the cache):
    its price, not its effect. With ``double`` (the same options at twice the iterations) the
    attack runs three times — ``options`` (cold: one-off costs and cache fills included),
    ``options`` again and ``double`` (warm) — so the plan can tell set-up from per-iteration cost."""

    kind: ClassVar[str] = "probe"
    name: str
    attack: str
    options: dict[str, Any] = field(default_factory=dict)
    double: dict[str, Any] | None = None

    def _fields(self) -> dict[str, Any]:
        return {"name": self.name, "attack": self.attack, "attack_options": self.options, "double": self.double}

    def label(self) -> str:
        return f"probe {self.name}"

    def execute(self, on_stage: Callable[[str], None]) -> dict[str, Any]:
        from ..attacks import build_attack
        from ..protocol.runner import train_clean
        from ..seeding import torch_generator
        from ..training import Victim

        on_stage("probe")
        d = self.data.load(self.seed)
        spec = self.victim.for_data(d.input_shape, d.num_classes, d.default_batch_size)
        cache = as_cache(self.cache_dir)
        clean, _ = train_clean(d, spec, self.seed, cache=cache)
        state = {k: v.detach().clone() for k, v in clean.state_dict().items()}
        seconds = []
        for options in ([self.options, self.options, self.double] if self.double is not None else [self.options]):
            atk = build_attack(self.attack, options)
            t0 = time.perf_counter()
            atk.poison(d.attack_data(), Victim(spec, self.seed, state), self.fraction,
                       generator=torch_generator(self.seed, "attack"), cache=cache)
            seconds.append(time.perf_counter() - t0)
        return {"seconds": seconds, "probe_seconds": seconds[0]}


@dataclass(frozen=True, kw_only=True)
class TheoryCell(Cell):
    """``pl.threshold`` against the ``target`` maker's target made from this seed's clean victim:
    τ (last layer), and for linear softmax victims τ_box / τ_gauge, at the evaluation's fraction."""

    kind: ClassVar[str] = "theory"
    target: str = "gradpc"

    def _fields(self) -> dict[str, Any]:
        return {"target": self.target}

    def label(self) -> str:
        return f"theory ({self.target}) s={self.seed}"

    def execute(self, on_stage: Callable[[str], None]) -> dict[str, Any]:
        from .. import api

        on_stage("threshold")
        t0 = time.perf_counter()
        report = api.threshold(self.data.load(self.seed), self.victim, self.target, fraction=self.fraction,
                               seed=self.seed, cache=self.cache_dir)
        return {**report.to_dict(), "seconds": time.perf_counter() - t0}


@dataclass(frozen=True, kw_only=True)
class DefenseCell(Cell):
    """``pl.defend`` of one defense on the poisons of one attack cell (same seed)."""

    kind: ClassVar[str] = "defense"
    defense: str
    attack_name: str
    poisons: str  # the attack cell's poisons.npz
    poisons_id: str  # the attack cell's run id (the poisons' identity, for this cell's id)
    options: dict[str, Any] = field(default_factory=dict)

    #: the format of the row's record, part of the cell's id: a row stored in another format (before
    #: pl.defend returned a DefenseResult: flat ``precision`` / ``seconds``) is run again, not misread
    record: ClassVar[str] = "DefenseResult"

    def _fields(self) -> dict[str, Any]:
        return {"defense": self.defense, "defense_options": self.options, "attack_name": self.attack_name,
                "poisons_of": self.poisons_id, "record": self.record}

    def label(self) -> str:
        return f"{self.defense} vs {self.attack_name} s={self.seed}"

    def execute(self, on_stage: Callable[[str], None]) -> dict[str, Any]:
        from .. import api

        on_stage("defend")
        report = api.defend(self.data.load(self.seed), load_poisons(self.poisons), self.victim, self.defense,
                            options=self.options, seed=self.seed, cache=self.cache_dir)
        if self.out:
            report.save_scores(Path(self.out) / "defense_scores.npz")
        return {**report.to_dict(), "poisoned_accuracy": report.poisoned_accuracy, "attack_name": self.attack_name,
                "seed": self.seed}
