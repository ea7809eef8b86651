"""One command for a CUDA machine: the device tests with CUDA really available, then a short TGDA
run on MNIST against an NN and a CNN victim on the GPU, through the public API
(``poisonlab.run(..., victim=poisonlab.victim("nn", device="cuda"))``).

    python bench/gpu_check.py              # on a CUDA machine: < 10 min on one H100 (planned sizes)
    python bench/gpu_check.py --dry-run    # the same path on the CPU with tiny sizes (checks the script)

Prints the figures and writes ``bench/results/gpu_check.json`` (device name, torch and CUDA
versions, the determinism settings, the test outcome, per-row clean / poisoned accuracy and
seconds, peak GPU memory). Without CUDA it says so, writes nothing and exits with code 2. A dry run
writes its record to a temporary directory, never to bench/results.

The sizes (``--n-train`` MNIST training points, victim ``--victim-epochs``, ``--tgda-epochs``) are
a functional check of the GPU path, not the thesis' Table 2.2 protocol (bench/table_2_2.py is).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, environment

ROOT = Path(__file__).resolve().parents[1]

#: TGDA options of the check: the defaults, with fewer epochs (and a small generator in the dry run)
DRY_TGDA = {"epochs": 2, "n": 2, "pretrain.epochs": 1, "solver.iters": 5, "generator_options": {"hidden": [32, 16]}}


def device_tests(device_ok: bool) -> dict:
    """tests/test_device.py in a fresh process (on a CUDA machine its CUDA-only tests run too)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-p", "no:cacheprovider", "tests/test_device.py"],
                       cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if any(w in ln for w in (" passed", " failed", " error", " skipped"))]
    tail = (lines or r.stdout.strip().splitlines() or [""])[-1].strip("= ")
    print(f"device tests: {tail} ({time.perf_counter() - t0:.1f} s)")
    if r.returncode:
        print(r.stdout[-4000:], r.stderr[-2000:], sep="\n")
    return {"returncode": r.returncode, "summary": tail, "seconds": time.perf_counter() - t0, "cuda_available": device_ok}


def experiment(dataset: str, n_train: int, n_test: int, seed: int = 0):
    """The first ``n_train`` / ``n_test`` points of a dataset (its seeded order) as poisonlab data."""
    import poisonlab as pl
    from poisonlab.data import load_dataset

    b = load_dataset(dataset)
    g = torch.Generator().manual_seed(seed)
    tr = torch.randperm(len(b.train), generator=g, device="cpu")[:n_train]
    te = torch.randperm(len(b.test), generator=g, device="cpu")[:n_test]
    return pl.data_from_arrays(b.train.x[tr].numpy(), b.train.y[tr].numpy(), b.test.x[te].numpy(), b.test.y[te].numpy(),
                               seed=seed, num_classes=b.train.num_classes)


def tgda_row(data, model: str, device: str, victim_epochs: int, options: dict) -> dict:
    import poisonlab as pl

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    rec = pl.run(data, pl.victim(model, device=device, epochs=victim_epochs), "tgda", 0.03, options=options, seed=0,
                 progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"model": model, "device": rec.device, "victim_epochs": victim_epochs, "tgda_options": options,
           "clean_accuracy": rec.clean_accuracy, "poisoned_accuracy": rec.poisoned_accuracy,
           "accuracy_drop": rec.accuracy_drop, "seconds": seconds,
           "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None}
    print(f"{model:>4} on {row['device']}: clean {row['clean_accuracy']:.2f} -> poisoned {row['poisoned_accuracy']:.2f} "
          f"(drop {row['accuracy_drop']:+.2f}) in {seconds:.1f} s")
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="the same path on the CPU with tiny sizes (digits)")
    p.add_argument("--n-train", type=int, default=6000, help="MNIST training points (default 6000; D_tr is 70%%)")
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--victim-epochs", type=int, default=20)
    p.add_argument("--tgda-epochs", type=int, default=10)
    p.add_argument("--skip-tests", action="store_true", help="only the TGDA rows")
    p.add_argument("--out", default=str(RESULTS / "gpu_check.json"))
    args = p.parse_args(argv)

    from poisonlab.artifacts import write_json
    from poisonlab.seeding import deterministic

    if not args.dry_run and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available here (torch {torch.__version__}, CUDA {torch.version.cuda}); nothing "
              "was run or written. Run it on a CUDA machine, or `python bench/gpu_check.py --dry-run` to check the "
              "script on the CPU.", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    out = Path(tempfile.mkdtemp(prefix="gpu-check-dry-")) / "gpu_check.json" if args.dry_run else Path(args.out)
    t0 = time.perf_counter()
    record: dict = {"environment": environment(), "dry_run": args.dry_run, "device": device,
                    "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
                    "torch": torch.__version__, "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version() if device == "cuda" else None}
    record["device_tests"] = None if args.skip_tests else device_tests(torch.cuda.is_available())
    if args.dry_run:
        data, victim_epochs, tgda = experiment("digits", 600, 300), 2, DRY_TGDA
    else:
        data, victim_epochs, tgda = experiment("mnist", args.n_train, args.n_test), args.victim_epochs, {"epochs": args.tgda_epochs}
    with deterministic() as settings:
        record["determinism"] = settings
        record["rows"] = [tgda_row(data, model, device, victim_epochs, tgda) for model in ("nn", "cnn")]
    record["n_train"] = len(data.train) + len(data.val)
    record["seconds_total"] = time.perf_counter() - t0
    write_json(out, record)
    ok = record["device_tests"] is None or record["device_tests"]["returncode"] == 0
    print(f"total {record['seconds_total']:.1f} s; device tests {'passed' if ok else 'FAILED'}; record: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
