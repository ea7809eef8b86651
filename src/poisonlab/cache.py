"""A small content-addressed store for expensive trained state (state dicts as safetensors).

Used by the protocol's stage 1 (clean-trained victims, kind ``victim_clean``), its stage 3 and the
defenses (victims retrained on a poisoned set, kind ``victim_poisoned``) and open to any
stage that turns a configuration into trained weights (attacker generators pretrained for TGDA,
GradPC target models)::

    cache = ArtifactCache()   # <cache root>/artifacts (see poisonlab.paths), or ArtifactCache("some/dir")
    state, hit = cache.get_or_create("victim_clean", {"model": "lr", "seed": 0, ...}, build_fn)

The cache is always an explicit argument (no global or context state): ``Attack.poison(...,
cache=...)`` hands it to the attack, which calls::

    state, info, hit = cached_build(cache, "tgda_generator", key_dict, build_fn)   # cache may be None

``key_dict`` must be JSON-serialisable and must contain *everything* that changes the result
(data fingerprint, model, options, recipe, seed, poisonlab version); the cache adds the package's
:func:`source_fingerprint` itself, so an edit of the code is a miss. The entry lives at
``<root>/<kind>/<sha256(kind, key)[:24]>.safetensors`` with the full key stored in the
safetensors metadata. Writes go through the one atomic writer (:func:`poisonlab.storage.atomic_path`);
concurrent builders of the same key are serialised with a per-key ``flock`` so only one of them
trains. Tensors are stored on CPU and returned on CPU; no pickle anywhere.

The artifacts are one kind of the store under the cache root (:mod:`poisonlab.paths`: beside
``extractors/``, ``vae/`` and ``pretrained/``, which this class never touches): :meth:`ArtifactCache.clear`
deletes exactly the entries :meth:`ArtifactCache.entries` lists.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import ConfigError, DataError
from .paths import artifact_dir
from .storage import atomic_path
from .validation import check_output_dir

StateDict = dict[str, torch.Tensor]
_KEY_META = "poisonlab_cache_key"
_KIND_META = "poisonlab_cache_kind"
_INFO_META = "poisonlab_cache_info"
_DIGEST = re.compile(r"[0-9a-f]{24}")

#: the artifact kinds poisonlab itself stores (a caller may add its own; any plain name is a kind)
ARTIFACT_KINDS: dict[str, str] = {
    "victim_clean": "clean-trained victims (the protocol's stage 1)",
    "victim_poisoned": "victims retrained on a poisoned training set (stage 3; the defenses' first training)",
    "target": "target models (GradPC, reachable) for Gradient Canceling",
    "tgda_generator": "TGDA's pretrained attacker generators",
    "efficientnet_features": "EfficientNet-Lite0 features of a dataset",
}


def canonical_json(obj: Any) -> str:
    """Sorted-key, compact JSON: the one serialisation used for every hash."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True, default=_jsonable)
    except TypeError as exc:
        raise ConfigError(f"cache key is not JSON-serialisable: {exc}") from None


def _jsonable(o: Any) -> Any:
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    if callable(getattr(o, "item", None)) and getattr(o, "ndim", None) == 0:  # numpy / torch scalars
        return o.item()
    raise TypeError(f"{type(o).__name__} in cache key")


def _info_json(info: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(info), sort_keys=True, separators=(",", ":"), allow_nan=True, default=_jsonable)
    except TypeError as exc:
        raise ConfigError(f"cache info record is not JSON-serialisable: {exc}") from None


def key_hash(kind: str, key_dict: Mapping[str, Any]) -> str:
    """24 hex digits of sha256 over ``kind`` and the canonical JSON of ``key_dict``."""
    return hashlib.sha256(f"{kind}\n{canonical_json(dict(key_dict))}".encode()).hexdigest()[:24]


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of the dtypes, shapes and bytes of ``tensors`` (for keys that depend on data)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def source_fingerprint(root: str | os.PathLike | None = None) -> str:
    """sha256 over the relative paths and bytes of every ``*.py`` file under ``root`` (default: the
    installed poisonlab package). Part of the cache keys of trained state, so that editing the code —
    not only bumping the version — invalidates what the old code trained. Computed once per root."""
    return _source_fingerprint(str(Path(root) if root is not None else Path(__file__).resolve().parent))


@functools.lru_cache(maxsize=None)
def _source_fingerprint(root: str) -> str:
    base = Path(root)
    h = hashlib.sha256()
    for path in sorted(base.rglob("*.py")):
        name, body = path.relative_to(base).as_posix().encode(), path.read_bytes()
        h.update(f"{len(name)}:{len(body)}:".encode() + name + body)
    return h.hexdigest()


def _with_source(key_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Every entry's full key: the caller's key plus the package's :func:`source_fingerprint`."""
    return {**dict(key_dict), "source_sha256": source_fingerprint()}


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    digest: str
    path: Path
    size: int
    created: float
    key: dict[str, Any]


class ArtifactCache:
    """Content-addressed safetensors store; see the module docstring. ``root`` defaults to
    :func:`poisonlab.paths.artifact_dir` (``<cache root>/artifacts``)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = check_output_dir(artifact_dir(root), "cache")  # a file in the way fails before any work

    def path_for(self, kind: str, key_dict: Mapping[str, Any]) -> Path:
        _check_kind(kind)
        return self.root / kind / f"{key_hash(kind, _with_source(key_dict))}.safetensors"

    def get(self, kind: str, key_dict: Mapping[str, Any]) -> StateDict | None:
        """The stored state dict, or ``None`` when absent (a corrupt entry is removed and reported absent)."""
        found = self.get_with_info(kind, key_dict)
        return None if found is None else found[0]

    def get_with_info(self, kind: str, key_dict: Mapping[str, Any]) -> tuple[StateDict, dict[str, Any]] | None:
        """(state dict, the JSON ``info`` stored beside it, {} if none), or ``None`` when absent."""
        path = self.path_for(kind, key_dict)
        if not path.is_file():
            return None
        try:
            state = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                info = json.loads((f.metadata() or {}).get(_INFO_META, "{}"))
            return state, info
        except Exception:
            path.unlink(missing_ok=True)  # torn or foreign file: rebuild rather than fail
            return None

    def put(self, kind: str, key_dict: Mapping[str, Any], state: Mapping[str, torch.Tensor],
            info: Mapping[str, Any] | None = None) -> Path:
        """Store ``state`` (and an optional JSON-serialisable ``info`` record in the file's metadata)."""
        path = self.path_for(kind, key_dict)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise TypeError("cache values must be tensors (a state dict)")
        meta = {_KIND_META: kind, _KEY_META: canonical_json(_with_source(key_dict)), "created": f"{time.time():.3f}"}
        if info is not None:
            meta[_INFO_META] = _info_json(info)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    def get_or_create(
        self, kind: str, key_dict: Mapping[str, Any], build_fn: Callable[[], Mapping[str, torch.Tensor]]
    ) -> tuple[StateDict, bool]:
        """Return ``(state_dict, hit)``: the stored entry, or ``build_fn()`` stored then returned.

        Builders of the same key in other processes wait on a file lock and then read the entry.
        The returned tensors are always the stored (CPU) copies, so a hit and a miss give
        bit-identical values.
        """
        state, _, hit = self.get_or_build(kind, key_dict, lambda: (build_fn(), None))
        return state, hit

    def get_or_build(
        self, kind: str, key_dict: Mapping[str, Any],
        build_fn: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any] | None]],
    ) -> tuple[StateDict, dict[str, Any], bool]:
        """:meth:`get_or_create` for builders that also return a JSON ``info`` record (e.g. a
        target's accuracy and loss trace): ``(state_dict, info, hit)``, info as stored."""
        found = self.get_with_info(kind, key_dict)
        if found is not None:
            return (*found, True)
        path = self.path_for(kind, key_dict)
        with _file_lock(path.with_name(f".{path.name}.lock")):
            found = self.get_with_info(kind, key_dict)
            if found is not None:
                return (*found, True)
            self.put(kind, key_dict, *build_fn())
        found = self.get_with_info(kind, key_dict)
        if found is None:
            raise DataError(f"cache entry {path} vanished right after it was written")
        return (*found, False)

    def entries(self, kind: str | None = None) -> list[CacheEntry]:
        """Every stored entry (optionally of one kind), oldest first. An entry is a
        ``<kind>/<24 hex digits>.safetensors`` file whose metadata names that kind (or that cannot
        be read: a torn entry); any other file under the root is not an entry and is left alone."""
        if kind:
            _check_kind(kind)
        if not self.root.is_dir():
            return []
        kinds = [kind] if kind else sorted(p.name for p in self.root.iterdir() if p.is_dir())
        out = []
        for k in kinds:
            for p in sorted((self.root / k).glob("*.safetensors")):
                if not _DIGEST.fullmatch(p.stem):
                    continue
                try:
                    with safe_open(str(p), framework="pt") as f:
                        meta = f.metadata() or {}
                    if meta.get(_KIND_META) != k:
                        continue  # a safetensors file the cache did not write
                    key = json.loads(meta.get(_KEY_META, "{}"))
                    created = float(meta.get("created", p.stat().st_mtime))
                except Exception:
                    key, created = {"error": "unreadable entry"}, p.stat().st_mtime
                out.append(CacheEntry(k, p.stem, p, p.stat().st_size, created, key))
        return sorted(out, key=lambda e: e.created)

    def kinds(self) -> list[str]:
        """The kinds that hold at least one entry, sorted."""
        return sorted({e.kind for e in self.entries()})

    def clear(self, kind: str | None = None) -> int:
        """Delete the entries :meth:`entries` lists (every kind, or only ``kind``) and their lock
        files, then the kind folders left empty; nothing else. Returns how many entries went."""
        if kind:
            _check_kind(kind)
        entries = self.entries(kind)
        for e in entries:
            e.path.unlink(missing_ok=True)
            e.path.with_name(f".{e.path.name}.lock").unlink(missing_ok=True)
        for folder in {e.path.parent for e in entries}:
            try:
                folder.rmdir()  # only when empty: a foreign file keeps its folder
            except OSError:
                pass
        return len(entries)


def _check_kind(kind: str) -> None:
    if not kind or not kind.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"cache kind must be a plain name (letters, digits, _ or -), got {kind!r}")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (released by the kernel if the holder dies)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no cross-process dedup, still correct
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def as_cache(cache: "ArtifactCache | str | os.PathLike | None") -> "ArtifactCache | None":
    """An :class:`ArtifactCache` from a cache, a directory, or ``None`` (no cache)."""
    if cache is None or isinstance(cache, ArtifactCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return ArtifactCache(cache)
    raise ConfigError(f"cache must be an ArtifactCache, a directory or None, got {type(cache).__name__}")


def cached_build(
    cache: "ArtifactCache | None", kind: str, key: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    build_fn: Callable[[], tuple[Mapping[str, torch.Tensor], Mapping[str, Any] | None]],
) -> tuple[StateDict, dict[str, Any], bool]:
    """``cache.get_or_build``; with ``cache=None``, ``(*build_fn(), False)``. ``key`` may be a
    function, called only when there is a cache (fingerprints of large data cost a pass over it)."""
    if cache is None:
        state, info = build_fn()
        return dict(state), dict(info or {}), False
    return cache.get_or_build(kind, key() if callable(key) else key, build_fn)


def module_fingerprint(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes, bytes), for keys that depend on weights."""
    state = module.state_dict()
    names = sorted(state)
    return hashlib.sha256((canonical_json(names) + tensor_fingerprint(*(state[k] for k in names))).encode()).hexdigest()
