"""One storage and environment layer: every path variable read in poisonlab.paths, every stored
kind under one cache root, one atomic writer and one file hash (poisonlab.storage)."""

from __future__ import annotations

import ast
import hashlib
import os
import re
from pathlib import Path

import pytest

import poisonlab
from poisonlab import paths, storage

ROOT = Path(poisonlab.__file__).parent

#: the only modules that touch ``os.environ`` (read or write), and why
ENV_MODULES = {
    "paths": "the storage variables (POISONLAB_CACHE, XDG_CACHE_HOME, POISONLAB_DATA, POISONLAB_MODELS, POISONLAB_OFFLINE)",
    "cli/main": "the process environment the CLI sets (OMP_WAIT_POLICY), before torch is imported",
    "seeding": "the determinism switch and cuBLAS's workspace, which cuBLAS reads when it starts",
}


@pytest.fixture
def clean_env(monkeypatch):
    for name in paths.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")
    return monkeypatch


def test_the_cache_root_and_its_kinds(clean_env, tmp_path):
    assert paths.cache_root() == Path("/nonexistent-home/.cache/poisonlab")
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_root() == tmp_path / "xdg" / "poisonlab"
    clean_env.setenv("POISONLAB_CACHE", str(tmp_path / "root"))  # one meaning: the root, whatever XDG says
    root = tmp_path / "root"
    assert paths.cache_root() == root
    assert paths.cache_root(tmp_path / "given") == tmp_path / "given"  # an argument wins
    assert (paths.artifact_dir(), paths.extractor_dir(), paths.vae_dir(), paths.pretrained_dir(), paths.data_dir()) == (
        root / "artifacts", root / "extractors", root / "vae", root / "pretrained", root / "data")
    assert {p.name for p in (paths.artifact_dir(), paths.extractor_dir(), paths.vae_dir(), paths.pretrained_dir(),
                             paths.data_dir())} == set(paths.STORE_KINDS)
    assert paths.artifact_dir(tmp_path / "a") == tmp_path / "a"
    assert paths.pretrained_dir(tmp_path / "r") == tmp_path / "r" / "pretrained"
    clean_env.setenv("POISONLAB_DATA", str(tmp_path / "data"))
    assert paths.data_dir() == tmp_path / "data" and paths.data_dir(tmp_path / "d2") == tmp_path / "d2"
    assert paths.models_dir() is None
    clean_env.setenv("POISONLAB_MODELS", "~/weights")
    assert paths.models_dir() == Path("/nonexistent-home/weights")  # ~ expanded


def test_offline_switch(clean_env):
    assert not paths.offline()
    for value, expected in (("1", True), ("true", True), ("YES", True), ("0", False), ("", False)):
        clean_env.setenv("POISONLAB_OFFLINE", value)
        assert paths.offline() is expected


def test_every_module_asks_paths(clean_env, tmp_path):
    """The cache, the extractors, the VAEs, the converted weights and the data all follow POISONLAB_CACHE."""
    from poisonlab.cache import ArtifactCache
    from poisonlab.errors import DataError
    from poisonlab.models.extractors import resolve_extractor
    from poisonlab.models.pretrained import efficientnet

    clean_env.setenv("POISONLAB_CACHE", str(tmp_path))
    assert ArtifactCache().root == tmp_path / "artifacts"
    assert efficientnet.converted_path().parent == tmp_path / "pretrained"
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "extractors" / "nokey.safetensors"))):
        resolve_extractor("nokey")
    from poisonlab.data import load_dataset

    clean_env.setenv("POISONLAB_OFFLINE", "1")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "data"))):  # POISONLAB_DATA unset: <root>/data
        load_dataset("mnist")


def _env_users() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        lines = [n.lineno for n in ast.walk(tree)
                 if isinstance(n, ast.Attribute) and n.attr in ("environ", "getenv", "putenv", "unsetenv")
                 and isinstance(n.value, ast.Name) and n.value.id == "os"]
        if lines:
            out[path.relative_to(ROOT).with_suffix("").as_posix()] = lines
    return out


def test_the_environment_is_read_in_one_place():
    users = _env_users()
    stray = {m: lines for m, lines in users.items() if m not in ENV_MODULES}
    assert not stray, f"modules reading or setting os.environ outside {sorted(ENV_MODULES)}: {stray}"
    storage_vars = set(paths.ENVIRONMENT)
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").as_posix()
        if rel == "paths":
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if "os.environ" in line or "getenv" in line)
        assert not any(v in code for v in storage_vars), f"{rel} reads a storage variable itself; ask poisonlab.paths"


def test_library_code_never_reads_a_development_checkout():
    """No ``../shared`` (no ``shared`` path segment, no climbing out of the package): data come from
    POISONLAB_DATA or an argument, weights from POISONLAB_MODELS or the package."""
    pattern = re.compile(r"""(^|[/\\'"])shared([/\\'"]|$)|parents\[[3-9]\]""", re.M)
    found = [f"{p.relative_to(ROOT)}:{m.group(0)!r}" for p in sorted(ROOT.rglob("*.py")) for m in pattern.finditer(p.read_text())]
    assert not found, f"library code guessing the checkout layout: {found}"


# ------------------------------------------------------------------------------------ storage
def test_atomic_path_replaces_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "sub" / "f.bin"
    storage.write_atomic(dest, b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with storage.atomic_path(dest) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("crash")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]  # no temporary left behind
    with storage.atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(".f.bin.") and not tmp.exists()
        tmp.write_bytes(b"new")
        assert dest.read_bytes() == b"old"  # readers see the old file until the rename
    assert dest.read_bytes() == b"new" and sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]


def test_atomic_dir(tmp_path):
    dest = tmp_path / "model"
    with storage.atomic_dir(dest) as tmp:
        (tmp / "a.json").write_text("1")
    with pytest.raises(ValueError):
        with storage.atomic_dir(dest) as tmp:
            (tmp / "b.json").write_text("2")
            raise ValueError
    assert sorted(p.name for p in dest.iterdir()) == ["a.json"]
    with storage.atomic_dir(dest) as tmp:
        (tmp / "c.json").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["c.json"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_file_sha256_is_the_one_file_hash(tmp_path):
    from poisonlab.models.pretrained import _files

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    assert storage.file_sha256(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert _files.file_sha256 is storage.file_sha256
    f.write_bytes(b"abd" * 1001)  # new size (and mtime): the memo does not return the stale digest
    assert storage.file_sha256(f) == hashlib.sha256(b"abd" * 1001).hexdigest()
    hashers = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")
               if re.search(r"open\([^)]*\"rb\"\)[\s\S]{0,200}hashlib|hashlib[\s\S]{0,300}f\.read\(1 << 20\)", p.read_text())]
    assert hashers == ["storage.py"], f"file hashing outside poisonlab.storage: {hashers}"


def test_one_atomic_writer():
    writers = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if "os.replace(" in p.read_text())
    allowed = {"storage.py",
               "attacks/bilevel/checkpoint.py", "sweeps/execute.py"}  # not yet moved onto storage.atomic_path (other owners)
    assert set(writers) <= allowed, f"os.replace outside poisonlab.storage: {sorted(set(writers) - allowed)}"
    assert "storage.py" in writers
    assert os.path.basename(storage.__file__) == "storage.py"
