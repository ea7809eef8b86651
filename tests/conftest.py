import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its thread pool

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture
def data_dir():
    """The real data directory ($POISONLAB_DATA, else ../shared/data); skip when absent."""
    d = os.environ.get("POISONLAB_DATA") or SHARED_DATA
    if not os.path.isfile(os.path.join(d, "mnist.npz")):
        pytest.skip("real data files not available (set POISONLAB_DATA)")
    return d


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
