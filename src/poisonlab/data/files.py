"""Reading the standard on-disk formats, verifying them, and downloading them with checksums.

Formats: the four-array npz layout (``x_train y_train x_test y_test``), MNIST/Fashion-MNIST idx
files (gzipped or not) and the CIFAR-10 *binary* version. Nothing is ever unpickled: npz files are
opened with ``allow_pickle=False`` and the CIFAR-10 python (pickle) version is not accepted.

Checksums are checksums of *content*: the MD5 of each decompressed official file. For an npz we
rebuild the official file bytes from its arrays, so an npz written with any compression verifies.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..paths import offline
from ..storage import atomic_path

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class RawFile:
    """One official raw file: its name, the MD5 of its decompressed content, where to fetch it."""

    name: str
    md5: str
    url: str = ""


@dataclass(frozen=True)
class FileDatasetInfo:
    name: str
    layout: str  # "idx" or "cifar_bin"
    files: tuple[RawFile, ...]
    archive_url: str = ""  # CIFAR-10 ships one tarball
    npz_sha256: str = ""  # sha256 of the reference npz copy (informational)
    dir_aliases: tuple[str, ...] = ()


#: the four files of the MNIST layout, in the order of NPZ_KEYS
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx_dataset(name: str, url: str, md5s: tuple[str, str, str, str], npz_sha256: str,
                 dir_aliases: tuple[str, ...]) -> FileDatasetInfo:
    """A dataset in the MNIST layout: the :data:`IDX_FILES` with their content MD5s, each gzipped at ``url``."""
    files = tuple(RawFile(f, m, url + f + ".gz") for f, m in zip(IDX_FILES, md5s))
    return FileDatasetInfo(name, "idx", files, npz_sha256=npz_sha256, dir_aliases=dir_aliases)


FILE_DATASETS: dict[str, FileDatasetInfo] = {
    "mnist": _idx_dataset(
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
         "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"),
        npz_sha256="06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
        dir_aliases=("mnist", "MNIST", "MNIST/raw"),
    ),
    "fashion_mnist": _idx_dataset(
        "fashion_mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
         "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
        npz_sha256="5b6d2c4c694a91887af8ab7d039c04f80af3c29378d731c93a538d2e831aa469",
        dir_aliases=("fashion_mnist", "fashion-mnist", "FashionMNIST", "FashionMNIST/raw"),
    ),
    "cifar10": FileDatasetInfo(
        "cifar10",
        "cifar_bin",
        tuple(
            RawFile(n, m)
            for n, m in (
                ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
                ("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
                ("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
                ("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
                ("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
                ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
            )
        ),
        archive_url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        npz_sha256="61286bb20924259c59bea42e16b46d46fab479b43fb83d4830cfc43bc422ede9",
        dir_aliases=("cifar10", "cifar-10-batches-bin", "cifar10/cifar-10-batches-bin"),
    ),
}


# ---------------------------------------------------------------------------- npz
def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read the four arrays of an npz file; corrupt or truncated files raise :class:`DataError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; an npz dataset needs {', '.join(NPZ_KEYS)}"
                )
            return {k: np.asarray(z[k]) for k in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"{path}: cannot read the npz file ({exc}); it is corrupt or truncated") from None


# ---------------------------------------------------------------------------- idx
def idx_bytes(arr: np.ndarray) -> bytes:
    """The bytes of the official idx file holding ``arr`` (uint8)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.tobytes()


def parse_idx(data: bytes, source: str) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{source}: too short for an idx file (truncated?)")
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{source}: not an unsigned-byte idx file (bad magic number)")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    expected = int(np.prod(shape))
    if len(body) != expected:
        raise DataError(f"{source}: expected {expected} data bytes for shape {shape}, found {len(body)} (truncated?)")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape).copy()


def cifar_bin_bytes(x_hwc: np.ndarray, y: np.ndarray) -> bytes:
    """The bytes of one official CIFAR-10 binary batch: a label byte then 3072 CHW bytes per image."""
    chw = np.ascontiguousarray(x_hwc.transpose(0, 3, 1, 2)).reshape(len(x_hwc), -1)
    rows = np.concatenate([y.astype(np.uint8).reshape(-1, 1), chw.astype(np.uint8)], axis=1)
    return rows.tobytes()


def parse_cifar_bin(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) % 3073:
        raise DataError(f"{source}: size {len(data)} is not a multiple of 3073 bytes (truncated?)")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3073)
    x = rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), rows[:, 0].copy()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def content_checksums(info: FileDatasetInfo, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """MD5 of each official raw file, rebuilt from the four arrays."""
    if info.layout == "idx":
        return {f.name: md5(idx_bytes(arrays[k])) for f, k in zip(info.files, NPZ_KEYS)}
    out = {}
    for i, f in enumerate(info.files[:5]):
        sl = slice(10000 * i, 10000 * (i + 1))
        out[f.name] = md5(cifar_bin_bytes(arrays["x_train"][sl], arrays["y_train"][sl]))
    out[info.files[5].name] = md5(cifar_bin_bytes(arrays["x_test"], arrays["y_test"]))
    return out


def verify_arrays(info: FileDatasetInfo, arrays: dict[str, np.ndarray], source: Path) -> None:
    """Raise :class:`DataError` unless the arrays reproduce the official files byte for byte."""
    try:
        got = content_checksums(info, arrays)
    except (ValueError, IndexError) as exc:
        raise DataError(f"{source}: arrays do not have the official {info.name} shapes ({exc})") from None
    for f in info.files:
        if got[f.name] != f.md5:
            raise DataError(
                f"{source}: content does not match the official {info.name} file {f.name} "
                f"(expected MD5 {f.md5}, got {got[f.name]}); the file is corrupt or not {info.name}"
            )


# ---------------------------------------------------------------------------- finding files
def _candidate_dirs(root: Path, info: FileDatasetInfo) -> list[Path]:
    return [root] + [root / a for a in info.dir_aliases]


def _find_raw(root: Path, info: FileDatasetInfo) -> dict[str, Path] | None:
    for d in _candidate_dirs(root, info):
        found = {}
        for f in info.files:
            for cand in (d / f.name, d / (f.name + ".gz")):
                if cand.is_file():
                    found[f.name] = cand
                    break
        if len(found) == len(info.files):
            return found
    return None


def _read_raw_file(path: Path, expected_md5: str) -> bytes:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is corrupt or truncated") from None
    got = md5(data)
    if got != expected_md5:
        raise DataError(
            f"{path}: checksum mismatch (expected MD5 {expected_md5} of the decompressed file, got {got}); "
            "delete it and download it again"
        )
    return data


def read_raw(files: dict[str, Path], info: FileDatasetInfo) -> dict[str, np.ndarray]:
    raw = {f.name: _read_raw_file(files[f.name], f.md5) for f in info.files}
    if info.layout == "idx":
        n = [f.name for f in info.files]
        return {
            "x_train": parse_idx(raw[n[0]], str(files[n[0]])),
            "y_train": parse_idx(raw[n[1]], str(files[n[1]])),
            "x_test": parse_idx(raw[n[2]], str(files[n[2]])),
            "y_test": parse_idx(raw[n[3]], str(files[n[3]])),
        }
    parts = [parse_cifar_bin(raw[f.name], str(files[f.name])) for f in info.files]
    return {
        "x_train": np.concatenate([p[0] for p in parts[:5]]),
        "y_train": np.concatenate([p[1] for p in parts[:5]]),
        "x_test": parts[5][0],
        "y_test": parts[5][1],
    }


def locate(root: Path, info: FileDatasetInfo) -> tuple[str, Path | dict[str, Path]] | None:
    """Where a dataset lives under ``root``: ("npz", path) or ("raw", {file: path}) or None."""
    for d in _candidate_dirs(root, info)[:2]:
        p = d / f"{info.name}.npz"
        if p.is_file():
            return "npz", p
    raw = _find_raw(root, info)
    return ("raw", raw) if raw else None


def load_arrays(info: FileDatasetInfo, data_dir: Path, download: bool = True) -> dict[str, np.ndarray]:
    """The four uint8 arrays of a file dataset, verified; downloads when missing and allowed."""
    where = locate(data_dir, info)
    if where is None and download and not offline():
        try:
            fetch(info, data_dir)
        except DataError:
            raise
        except Exception as exc:  # network refused / unreachable
            raise DataError(_missing_message(info, data_dir, f"download failed: {exc}")) from None
        where = locate(data_dir, info)
    if where is None:
        raise DataError(_missing_message(info, data_dir, "no download attempted (offline)"))
    _, loc = where
    if isinstance(loc, Path):  # ("npz", path); ("raw", {file: path}) otherwise
        arrays = read_npz(loc)
        verify_arrays(info, arrays, loc)
        return arrays
    return read_raw(loc, info)


def _missing_message(info: FileDatasetInfo, data_dir: Path, why: str) -> str:
    if info.archive_url:
        where = f"the official archive {info.archive_url} (extract cifar-10-batches-bin/ into it)"
        names = ", ".join(f.name for f in info.files)
    else:
        where = "the official files " + ", ".join(f.url for f in info.files)
        names = ", ".join(f.name + "[.gz]" for f in info.files)
    return (
        f"dataset {info.name!r} not found in data directory {data_dir} ({why}). Put either "
        f"{info.name}.npz (arrays x_train y_train x_test y_test) or the raw files {names} there; "
        f"get them from {where}. Choose the directory with --data-dir or POISONLAB_DATA."
    )


# ---------------------------------------------------------------------------- download
def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    with atomic_path(dest) as tmp, open(tmp, "xb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        shutil.copyfileobj(resp, out)


def fetch(info: FileDatasetInfo, data_dir: Path) -> None:
    """Download the official files into ``data_dir/<name>/`` and verify every checksum."""
    target = data_dir / info.dir_aliases[0]
    if info.archive_url:
        with tempfile.TemporaryDirectory() as tmpdir:
            archive = Path(tmpdir) / "archive.tar.gz"
            _download(info.archive_url, archive)
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    base = os.path.basename(member.name)
                    if member.isfile() and base in {f.name for f in info.files}:
                        src = tar.extractfile(member)
                        assert src is not None
                        target.mkdir(parents=True, exist_ok=True)
                        (target / base).write_bytes(src.read())
    else:
        for f in info.files:
            _download(f.url, target / (f.name + ".gz"))
    for f in info.files:  # verify now so a bad download is reported as such
        path = target / f.name
        path = path if path.exists() else target / (f.name + ".gz")
        if not path.exists():
            raise DataError(f"download of {info.name} did not produce {f.name}")
        try:
            _read_raw_file(path, f.md5)
        except DataError:
            path.unlink()
            raise
