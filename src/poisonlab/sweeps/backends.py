"""Execution backends: where the runs of a sweep execute. Both call :func:`execute_run` unchanged.

* :class:`LocalBackend` — ``workers`` spawned processes on this machine. At most ``workers``
  runs are handed out at a time, so "running" is exact; a worker that dies (OOM kill, segfault)
  fails only the runs it held, and the pool is rebuilt. Workers exit when the coordinator dies.
* :class:`InlineBackend` — ``workers=0``: one run at a time inside the coordinator (debugging).
* :class:`RayBackend` — each run is a Ray task with ``num_cpus`` / ``num_gpus`` requests, so a
  cluster (``address``) spreads the grid over its machines; without an address a local Ray
  instance is started (with the machine's GPUs). A run whose device is CUDA (``cuda``,
  ``cuda:N``, or ``auto`` on a cluster with GPUs) asks for ``resources.gpus`` GPUs, at least 1:
  Ray hides the GPUs from a task that requested none. Stages are reported to a small Ray actor. The sweep directory (run
  artifacts, cache) should be on storage every node sees; poisonlab must be installed on every node.

The coordinator (:func:`poisonlab.sweeps.sweep.run_sweep`) is the only writer of ``results.jsonl``.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, PoisonlabError
from .execute import FileStageSink, Job, config_device, execute_run
from .grid import Resources


class Backend(Protocol):
    name: str

    def capacity(self) -> int:
        """How many runs to keep in flight."""

    def submit(self, run_id: str, config: dict[str, Any] | Job) -> None: ...

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Rows of runs that finished (waits up to ``timeout`` seconds for at least one)."""

    def stages(self) -> dict[str, str]:
        """Current stage of each run in flight (``queued`` when it has not started)."""

    def close(self, abort: bool = False) -> None: ...


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: leave as soon as the coordinator is gone (e.g. ``kill -9``)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


class LocalBackend:
    name = "local"

    def __init__(self, workers: int, resources: Resources, stage_dir: str | Path) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"--workers must be >= 1 (or 0: run inside this process), got {workers!r}")
        self.workers = workers
        self.threads = resources.cpus
        self.sink = FileStageSink(stage_dir)
        self._pool = self._new_pool()
        self._futures: dict[Future, str] = {}

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing as mp

        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_exit_with_parent, initargs=(os.getpid(),))

    def capacity(self) -> int:
        return self.workers

    def submit(self, run_id: str, config: dict[str, Any] | Job) -> None:
        self.sink.clear(run_id)
        fut = self._pool.submit(execute_run, run_id, config, self.threads, self.sink)
        self._futures[fut] = run_id

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        if not self._futures:
            return []
        done, _ = wait(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED)
        rows, broken = [], False
        for fut in done:
            run_id = self._futures.pop(fut)
            try:
                rows.append(fut.result())
            except BrokenProcessPool as exc:
                broken = True
                rows.append(_crashed(run_id, f"worker process died ({exc})"))
            except Exception as exc:  # e.g. an unpicklable result: still one failed row
                rows.append(_crashed(run_id, f"{type(exc).__name__}: {exc}"))
        if broken:  # every other run of the broken pool is lost too: fail them, start a new pool
            for run_id in list(self._futures.values()):
                rows.append(_crashed(run_id, "worker pool broke while this run was in flight"))
            self._futures.clear()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        return rows

    def stages(self) -> dict[str, str]:
        return self.sink.read(list(self._futures.values()))

    def close(self, abort: bool = False) -> None:
        """Stop the pool; on ``abort`` (Ctrl-C, error) do not wait for the runs in flight."""
        self._pool.shutdown(wait=not abort, cancel_futures=True)


class InlineBackend:
    """Runs one run at a time inside the coordinator's process (``--workers 0``: debugging, tests)."""

    name = "inline"

    def __init__(self, resources: Resources, stage_dir: str | Path) -> None:
        self.threads = resources.cpus
        self.sink = FileStageSink(stage_dir)
        self._queue: list[tuple[str, dict[str, Any] | Job]] = []

    def capacity(self) -> int:
        return 1

    def submit(self, run_id: str, config: dict[str, Any] | Job) -> None:
        self._queue.append((run_id, config))

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        if not self._queue:
            return []
        run_id, config = self._queue.pop(0)
        return [execute_run(run_id, config, self.threads, self.sink)]

    def stages(self) -> dict[str, str]:
        return self.sink.read([rid for rid, _ in self._queue])

    def close(self, abort: bool = False) -> None:
        self._queue.clear()


def _crashed(run_id: str, error: str) -> dict[str, Any]:
    return {"run_id": run_id, "status": "failed", "result": None, "error": error, "fingerprints": {}}


class RayBackend:
    name = "ray"

    def __init__(self, resources: Resources, *, address: str | None = None, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise PoisonlabError('the Ray backend needs Ray: pip install "poisonlab[ray]"') from None
        self.ray = ray
        self.resources = resources
        self._own = False
        if not ray.is_initialized():
            env = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(resources.cpus)}
            kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False,
                                      "include_dashboard": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=(workers or os.cpu_count() or 1) * resources.cpus,  # workers: runs at once
                         **kwargs)  # num_gpus: Ray detects the machine's GPUs
            self._own = True
        self.board = _stage_board(ray)
        self._task = ray.remote(_ray_execute).options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0)
        self._refs: dict[Any, str] = {}
        self._cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        cpus = ray.cluster_resources().get("CPU", 1)
        self._capacity = max(1, int(cpus // resources.cpus)) * 2  # keep the cluster fed, not flooded

    def capacity(self) -> int:
        return self._capacity

    def gpus_for(self, config: dict[str, Any] | Job) -> float:
        """The GPUs one run asks Ray for: ``resources.gpus``, at least 1 when the run's device is CUDA."""
        device = config_device(config)
        cuda = device.startswith("cuda") or (device == "auto" and self._cluster_gpus > 0)
        return max(float(self.resources.gpus), 1.0) if cuda else float(self.resources.gpus)

    def submit(self, run_id: str, config: dict[str, Any] | Job) -> None:
        gpus = self.gpus_for(config)
        task = self._task if gpus == self.resources.gpus else self._task.options(num_gpus=gpus)
        ref = task.remote(run_id, config, self.resources.cpus, self.board)
        self._refs[ref] = run_id

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        if not self._refs:
            return []
        done, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if done:  # collect everything already finished, not just one
            more, _ = self.ray.wait([r for r in self._refs if r not in done], num_returns=len(self._refs) - len(done), timeout=0)
            done = list(done) + list(more)
        rows = []
        for ref in done:
            run_id = self._refs.pop(ref)
            try:
                rows.append(self.ray.get(ref))
            except Exception as exc:  # the task's worker died (node lost, OOM): one failed row
                rows.append(_crashed(run_id, f"ray task failed: {type(exc).__name__}: {exc}"))
        return rows

    def stages(self) -> dict[str, str]:
        reported = self.ray.get(self.board.read.remote(list(self._refs.values())))
        return {rid: reported.get(rid, "queued") for rid in self._refs.values()}

    def close(self, abort: bool = False) -> None:
        for ref in list(self._refs):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self._own:
            self.ray.shutdown()


def _ray_execute(run_id: str, config: dict[str, Any] | Job, threads: int, board: Any) -> dict[str, Any]:
    return execute_run(run_id, config, threads, lambda rid, stage: board.set.remote(rid, stage))


def _stage_board(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class StageBoard:
        def __init__(self) -> None:
            self.stage: dict[str, str] = {}

        def set(self, run_id: str, stage: str) -> None:
            self.stage[run_id] = stage

        def read(self, run_ids: list[str]) -> dict[str, str]:
            return {r: self.stage[r] for r in run_ids if r in self.stage}

    return StageBoard.remote()  # type: ignore[attr-defined]  # ray.remote adds .remote


def make_backend(name: str, *, workers: int | None, resources: Resources, stage_dir: str | Path,
                 address: str | None = None) -> Backend:
    if name == "local":
        workers = 1 if workers is None else workers
        return InlineBackend(resources, stage_dir) if workers == 0 else LocalBackend(workers, resources, stage_dir)
    if name == "ray":
        return RayBackend(resources, address=address, workers=workers)
    raise ConfigError(f"unknown backend {name!r}; valid backends: local, ray")
