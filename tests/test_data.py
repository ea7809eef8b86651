"""Loaders: embedded sets, real files (counts, range, content checksums), raw formats, bad files."""

import gzip
import os

import numpy as np
import pytest
import torch

from poisonlab.data import load_dataset, make_or, poison_count, split_train_val
from poisonlab.data import files as F
from poisonlab.errors import ConfigError, DataError, UnknownNameError


def test_digits_is_embedded_and_in_unit_range():
    b = load_dataset("digits")
    assert b.train.x.shape[1:] == (1, 8, 8) and b.train.x.dtype == torch.float32
    assert len(b.train) + len(b.test) == 1797 and len(b.test) == 359
    assert 0.0 <= b.train.x.min() and b.train.x.max() <= 1.0
    assert b.train.y.dtype == torch.int64 and set(b.train.y.tolist()) == set(range(10))
    assert torch.equal(load_dataset("digits").test.x, b.test.x)  # fixed held-out split


def test_or_dataset_labels_follow_or():
    d = make_or(repeats=50, noise=0.05, seed=0)
    assert d.x.shape == (200, 1, 1, 2) and d.num_classes == 2
    corners = d.x.view(-1, 2).round()
    assert torch.equal(d.y, (corners.sum(1) > 0).long())


def test_split_is_seeded_70_30_and_disjoint():
    b = load_dataset("digits")
    a1 = split_train_val(b.train, torch.Generator().manual_seed(5))
    a2 = split_train_val(b.train, torch.Generator().manual_seed(5))
    a3 = split_train_val(b.train, torch.Generator().manual_seed(6))
    assert len(a1.train) == round(0.7 * len(b.train)) and len(a1.train) + len(a1.val) == len(b.train)
    assert torch.equal(a1.train.x, a2.train.x) and not torch.equal(a1.train.x, a3.train.x)


@pytest.mark.parametrize("fraction,n,expected", [(0.03, 42000, 1260), (0.03, 1007, 30), (0.0, 100, 0), (1.0, 7, 7), (0.05, 10, 1), (0.15, 10, 2)])
def test_budget_rule(fraction, n, expected):
    assert poison_count(fraction, n) == expected


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1", True])
def test_budget_rejects_bad_fraction(bad):
    with pytest.raises(ConfigError):
        poison_count(bad, 100)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnknownNameError, match="mnist"):
        load_dataset("imagenet")


@pytest.mark.realdata
@pytest.mark.parametrize("name,shape,n_train", [("mnist", (1, 28, 28), 60000), ("fashion_mnist", (1, 28, 28), 60000), ("cifar10", (3, 32, 32), 50000)])
def test_real_files_load_and_verify(data_dir, name, shape, n_train):
    b = load_dataset(name, data_dir)
    assert b.train.x.shape == (n_train, *shape) and len(b.test) == 10000
    assert float(b.train.x.min()) == 0.0 and float(b.train.x.max()) == 1.0
    counts = torch.bincount(b.train.y, minlength=10)
    if name == "mnist":
        assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    elif name == "fashion_mnist":
        assert counts.tolist() == [6000] * 10
    else:
        assert counts.tolist() == [5000] * 10
        assert b.train.y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]


@pytest.mark.realdata
def test_mnist_raw_idx_files_gz_and_plain(data_dir, tmp_path):
    arrays = F.read_npz(os.path.join(data_dir, "mnist.npz"))
    info = F.FILE_DATASETS["mnist"]
    sub = tmp_path / "mnist"
    sub.mkdir()
    for f, key in zip(info.files, ("x_train", "y_train", "x_test", "y_test")):
        raw = F.idx_bytes(arrays[key])
        if key.startswith("x"):
            (sub / (f.name + ".gz")).write_bytes(gzip.compress(raw, compresslevel=1))  # the level is the writer's choice
        else:
            (sub / f.name).write_bytes(raw)
    b = load_dataset("mnist", tmp_path)
    assert torch.equal(b.train.y, torch.from_numpy(arrays["y_train"].astype(np.int64)))
    # corrupt one byte of a label file: checksum error names the file and the expected MD5
    raw = bytearray((sub / "t10k-labels-idx1-ubyte").read_bytes())
    raw[100] = (raw[100] + 1) % 10
    (sub / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*27ae3e4e09519cfbb04c329615203637"):
        load_dataset("mnist", tmp_path)


def test_cifar_binary_roundtrip_and_truncation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 5).astype(np.uint8)
    xb, yb = F.parse_cifar_bin(F.cifar_bin_bytes(x, y), "t")
    assert np.array_equal(xb, x) and np.array_equal(yb, y)
    with pytest.raises(DataError, match="truncated"):
        F.parse_cifar_bin(F.cifar_bin_bytes(x, y)[:-10], "t")


def test_missing_files_offline_message_names_files_and_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONLAB_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "train-images-idx3-ubyte" in msg and "fashion_mnist.npz" in msg


def test_download_verifies_checksum(tmp_path, monkeypatch):
    """Download through file:// URLs: good files are accepted, a bad one is rejected and removed."""
    src = tmp_path / "mirror"
    src.mkdir()
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), "y_train": rng.integers(0, 10, 6, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), "y_test": rng.integers(0, 10, 3, dtype=np.uint8)}
    files = []
    for name, key in zip(("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
                         ("x_train", "y_train", "x_test", "y_test")):
        raw = F.idx_bytes(arrays[key])
        (src / (name + ".gz")).write_bytes(gzip.compress(raw))
        files.append(F.RawFile(name, F.md5(raw), (src / (name + ".gz")).as_uri()))
    info = F.FileDatasetInfo("mnist", "idx", tuple(files), dir_aliases=("mnist",))
    monkeypatch.setitem(F.FILE_DATASETS, "mnist", info)
    monkeypatch.delenv("POISONLAB_OFFLINE", raising=False)
    b = load_dataset("mnist", tmp_path / "data")
    assert len(b.train) == 6 and len(b.test) == 3
    bad = F.FileDatasetInfo("mnist", "idx", (F.RawFile(files[0].name, "0" * 32, files[0].url), *files[1:]), dir_aliases=("fresh",))
    monkeypatch.setitem(F.FILE_DATASETS, "mnist", bad)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("mnist", tmp_path / "data2")
    assert not (tmp_path / "data2" / "fresh" / (files[0].name + ".gz")).exists()


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_user_npz_loads_nhwc_uint8(tmp_path):
    rng = np.random.default_rng(0)
    p = _write_npz(tmp_path / "mine.npz", x_train=rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8),
                   y_train=rng.integers(0, 3, 20), x_test=rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8),
                   y_test=rng.integers(0, 3, 5))
    b = load_dataset(p)
    assert b.train.x.shape == (20, 3, 4, 4) and b.train.num_classes == 3 and b.train.x.max() <= 1.0


@pytest.mark.parametrize(
    "arrays,match",
    [
        (dict(x_train=np.zeros((4, 3, 3), np.uint8), y_train=np.zeros(4, int), x_test=np.zeros((2, 3, 3), np.uint8)), "missing array"),
        (dict(x_train=np.zeros((4, 9), np.uint8), y_train=np.zeros(4, int), x_test=np.zeros((2, 9), np.uint8), y_test=np.zeros(2, int)), "images must be"),
        (dict(x_train=np.full((4, 3, 3), 2.0), y_train=np.zeros(4, int), x_test=np.zeros((2, 3, 3)), y_test=np.zeros(2, int)), r"\[0, 1\]"),
        (dict(x_train=np.zeros((4, 3, 3), np.uint8), y_train=np.zeros(3, int), x_test=np.zeros((2, 3, 3), np.uint8), y_test=np.zeros(2, int)), "length 4"),
        (dict(x_train=np.zeros((4, 3, 3), np.uint8), y_train=np.zeros(4, float), x_test=np.zeros((2, 3, 3), np.uint8), y_test=np.zeros(2, int)), "integers"),
        (dict(x_train=np.zeros((4, 3, 3), np.int32), y_train=np.zeros(4, int), x_test=np.zeros((2, 3, 3), np.int32), y_test=np.zeros(2, int)), "dtype"),
    ],
)
def test_user_npz_bad_arrays_are_clear_errors(tmp_path, arrays, match):
    with pytest.raises(DataError, match=match):
        load_dataset(_write_npz(tmp_path / "bad.npz", **arrays))


def test_truncated_npz_is_a_data_error(tmp_path):
    p = tmp_path / "t.npz"
    np.savez_compressed(p, x_train=np.zeros((50, 8, 8), np.uint8), y_train=np.arange(50) % 2,
                        x_test=np.zeros((5, 8, 8), np.uint8), y_test=np.arange(5) % 2)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset(str(p))


def test_substitute_puts_poisons_in_place_of_their_sources():
    from poisonlab.data import PoisonedDataset
    from poisonlab.data.types import Dataset, PoisonSet

    clean = Dataset(torch.zeros(6, 1, 2, 2), torch.arange(6) % 3, 3)
    ps = PoisonSet(torch.ones(2, 1, 2, 2), torch.tensor([2, 0]), torch.tensor([4, 1]))
    mixed = PoisonedDataset.mix(clean, ps, "replace")
    assert len(mixed) == 6 and mixed.is_poison.tolist() == [False, True, False, False, True, False]
    assert mixed.dataset.x[[1, 4]].eq(1).all() and mixed.dataset.x[[0, 2, 3, 5]].eq(0).all()
    assert mixed.dataset.y.tolist() == [0, 0, 2, 0, 2, 2]
    assert clean.x.eq(0).all()  # D_tr itself untouched
    added = PoisonedDataset.mix(clean, ps, "add")
    assert len(added) == 8 and added.is_poison.tolist() == [False] * 6 + [True] * 2
    with pytest.raises(ConfigError, match="source"):
        PoisonedDataset.mix(clean, PoisonSet(ps.x, ps.y, torch.tensor([4, -1])), "replace")
    with pytest.raises(ConfigError, match="distinct"):
        PoisonedDataset.mix(clean, PoisonSet(ps.x, ps.y, torch.tensor([4, 4])), "replace")
    with pytest.raises(ConfigError, match="injection"):
        PoisonedDataset.mix(clean, ps, "swap")
