"""One run of a sweep, as executed by any backend: the protocol runner wrapped into a result row.

``execute_run`` is a plain top-level function of picklable arguments so that a process pool and
a Ray task run exactly the same code. It pins the torch thread count (results of CPU reductions
may depend on it) and caps numpy's BLAS at the same count for the run, calls
:func:`poisonlab.protocol.run_protocol` (the one protocol runner), reports each stage (the protocol's
typed ``on_stage`` callback) through a sink, and never raises: a failure becomes a ``failed`` row
with the error and traceback, so one bad run does not stop the sweep.

A run's config is a :class:`~poisonlab.protocol.RunSpec` (or its dict, the YAML grids' runs) or
any :class:`Job`: a frozen dataclass with ``out`` and ``cache_dir`` fields that executes itself
(``poisonlab evaluate``'s cells: attack, defense, probe and theory cells over a user's data and
victim, which a RunSpec cannot express). Both go through the same backends, coordinator and
``results.jsonl``.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

StageSink = Callable[[str, str], None]


@runtime_checkable
class Job(Protocol):
    """A run that is not a :class:`~poisonlab.protocol.RunSpec`: it executes itself.

    Implementations are frozen dataclasses with ``out`` (the run's artifact directory, set by the
    coordinator) and ``cache_dir`` fields, picklable for process and Ray backends. ``to_dict()``
    is the JSON config stored in the row (and hashed, without ``out`` / ``cache_dir`` /
    ``data_dir``, into the run id); ``execute`` returns the result record (JSON-serialisable).
    """

    @property
    def out(self) -> str | None: ...

    @property
    def cache_dir(self) -> str | None: ...

    def to_dict(self) -> dict[str, Any]: ...

    def label(self) -> str: ...

    def execute(self, on_stage: Callable[[str], None]) -> dict[str, Any]: ...


def config_device(config: Any) -> str:
    """The device a run's config asks for (``"auto"`` when it does not say)."""
    if isinstance(config, dict):
        return str(config.get("device") or "auto")
    return str(getattr(config, "device", None) or "auto")

#: result fields that must agree, run by run, whichever backend or worker ran it
COMPARABLE = ("clean_accuracy", "poisoned_accuracy", "accuracy_drop", "n_train", "n_poison",
              "max_perturbation", "mean_perturbation")


def fingerprints(out: Path) -> dict[str, str]:
    """sha256 of the poisons and of the trained victims a run wrote (bit-level identity of its outputs)."""
    from ..artifacts import load_poisons, load_state
    from ..cache import tensor_fingerprint

    fp = {}
    if (out / "poisons.npz").is_file():
        p = load_poisons(out / "poisons.npz")
        fp["poisons"] = tensor_fingerprint(p.x, p.y, p.source_index)
    for name in ("victim_clean", "victim_poisoned", "victim_defended"):
        if (out / f"{name}.safetensors").is_file():
            state = load_state(out / f"{name}.safetensors")
            fp[name] = tensor_fingerprint(*(state[k] for k in sorted(state)))
    return fp


def execute_run(run_id: str, config: dict[str, Any] | Job, threads: int, sink: StageSink | None = None) -> dict[str, Any]:
    """Run one config (a RunSpec dict or a :class:`Job`); return its row (``status`` ok or failed).
    Never raises for a run's own errors."""
    import torch
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # no type information

    from ..protocol import RunSpec, run_protocol

    t0 = time.perf_counter()
    report = sink or (lambda _id, _stage: None)
    job = config if isinstance(config, Job) else None
    row: dict[str, Any] = {"run_id": run_id, "config": job.to_dict() if job is not None else config,
                           "host": socket.gethostname(), "pid": os.getpid()}
    try:
        torch.set_num_threads(int(threads))
        report(run_id, "prepare")
        # numpy's / scipy's BLAS (an SVD, a least-squares solve) gets the run's threads too: left at one
        # per core, two workers' BLAS pools spin against each other (measured: docs/guide/evaluate.md)
        with threadpool_limits(limits=int(threads), user_api="blas"):
            if job is not None:
                result = job.execute(lambda stage: report(run_id, stage))
                out = job.out
            else:
                cfg = RunSpec.from_dict(config)  # type: ignore[arg-type]  # not a Job: a RunSpec dict
                run = run_protocol(cfg, progress=False, log=lambda _m: None, on_stage=lambda stage: report(run_id, stage))
                result, out = run.to_dict(), run.out
        report(run_id, "fingerprint")
        row.update(status="ok", result=result, error=None, fingerprints=fingerprints(Path(out)) if out else {})
    except Exception as exc:  # a failed run is data, not a crash of the sweep
        row.update(status="failed", result=None, error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc(limit=20), fingerprints={})
    row["seconds"] = time.perf_counter() - t0
    report(run_id, "done")
    return row


class FileStageSink:
    """Stage reports as tiny files ``<dir>/<run_id>`` (for local worker processes)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = str(directory)

    def __call__(self, run_id: str, stage: str) -> None:
        d = Path(self.directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{run_id}.{os.getpid()}"
        tmp.write_text(stage)
        os.replace(tmp, d / run_id)

    def read(self, run_ids: list[str]) -> dict[str, str]:
        out = {}
        for rid in run_ids:
            try:
                out[rid] = (Path(self.directory) / rid).read_text()
            except OSError:
                out[rid] = "queued"
        return out

    def clear(self, run_id: str) -> None:
        (Path(self.directory) / run_id).unlink(missing_ok=True)
