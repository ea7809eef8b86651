"""Shared helpers for benchmark scripts: environment record and atomic JSON results."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if "POISONLAB_DATA" not in os.environ and _SHARED.is_dir():  # benchmarks may read ../shared/data
    os.environ["POISONLAB_DATA"] = str(_SHARED)

import torch  # noqa: E402

from poisonlab._version import __version__  # noqa: E402
from poisonlab.artifacts import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    return {
        "poisonlab_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }


def quick_setup(args, name: str) -> tuple[str, int | None, Path, bool]:
    """The GC benches' shared choice of data and output: (dataset, victim epochs, output JSON, smoke).
    ``--quick`` means digits with 5 victim epochs; a quick run whose ``--out`` is the default writes to
    a temporary directory instead (``smoke`` True), so a smoke test never overwrites the results."""
    import tempfile

    dataset, epochs = ("digits", 5) if args.quick else ("mnist", None)
    smoke = bool(args.quick) and args.out == str(RESULTS / f"{name}.json")
    out = Path(tempfile.mkdtemp(prefix=f"{name}-quick-")) / f"{name}.json" if smoke else Path(args.out)
    return dataset, epochs, out, smoke


def clean_victim(cfg, progress: bool = False):
    """Stage 1 of the protocol for a bench script: (the run's :class:`~poisonlab.data.ExperimentData`,
    the clean-trained model, the attacker's :class:`~poisonlab.training.Victim`, whose ``spec`` is the
    run's). Through the clean-victim cache when ``cfg.cache_dir`` is set, like ``poisonlab run --cache-dir``."""
    from poisonlab.protocol import prepare, pretrain_victim
    from poisonlab.training import Victim

    prep, spec = prepare(cfg)
    clean, _ = pretrain_victim(cfg, prep, spec, progress)
    victim = Victim(spec, cfg.seed, {k: v.detach().clone() for k, v in clean.state_dict().items()})
    return prep, clean, victim


def save(name: str, record: dict) -> Path:
    path = RESULTS / f"{name}.json"
    write_json(path, {"environment": environment(), **record})
    print(f"wrote {path}")
    return path


def mnist_d_tr_sized():
    """MNIST's first 42 000 training points (|D_tr| of the protocol), for cost benches."""
    from poisonlab.data import load_dataset

    return load_dataset("mnist").train.subset(torch.arange(42000))


def weights_digest(model: torch.nn.Module) -> str:
    """The first 16 hex digits of the sha256 of a model's parameters (equal digests: bit-identical)."""
    import hashlib

    return hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]
