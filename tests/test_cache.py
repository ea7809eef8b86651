"""The content-addressed artifact cache and the protocol's stage-1 hook."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import pytest
import torch

from poisonlab.cache import ArtifactCache, key_hash, source_fingerprint, tensor_fingerprint
from poisonlab.errors import ConfigError
from poisonlab.protocol import RunSpec, load_state, run_protocol


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g, dtype=torch.float64), "b": torch.arange(5)}


def test_key_hash_is_order_independent_and_sensitive():
    a = key_hash("victim_clean", {"model": "lr", "seed": 0, "recipe": {"lr": 0.1, "epochs": 3}})
    b = key_hash("victim_clean", {"recipe": {"epochs": 3, "lr": 0.1}, "seed": 0, "model": "lr"})
    assert a == b
    assert a != key_hash("victim_clean", {"model": "lr", "seed": 1, "recipe": {"lr": 0.1, "epochs": 3}})
    assert a != key_hash("generator", {"model": "lr", "seed": 0, "recipe": {"lr": 0.1, "epochs": 3}})


def test_get_or_create_builds_once_and_returns_identical_tensors(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []

    def build():
        calls.append(1)
        return _state(0)

    first, hit1 = cache.get_or_create("victim_clean", {"k": 1}, build)
    second, hit2 = cache.get_or_create("victim_clean", {"k": 1}, build)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    for k, v in _state(0).items():
        assert torch.equal(first[k], v) and torch.equal(second[k], v) and second[k].dtype == v.dtype
    other, hit3 = cache.get_or_create("victim_clean", {"k": 2}, lambda: _state(1))
    assert not hit3 and not torch.equal(other["w"], first["w"])
    entries = cache.entries()
    src = source_fingerprint()  # the cache adds the code's fingerprint to every key
    assert [e.key for e in entries] == [{"k": 1, "source_sha256": src}, {"k": 2, "source_sha256": src}]
    assert cache.clear("victim_clean") == 2 and cache.entries() == []


def test_corrupt_entry_is_rebuilt(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.get_or_create("generator", {"k": 1}, lambda: _state(0))
    path = cache.path_for("generator", {"k": 1})
    path.write_bytes(path.read_bytes()[:20])  # a torn file from some crashed writer
    state, hit = cache.get_or_create("generator", {"k": 1}, lambda: _state(0))
    assert not hit and torch.equal(state["w"], _state(0)["w"])


def test_concurrent_builders_build_once(tmp_path):
    calls, results = [], []

    def build():
        calls.append(1)
        threading.Event().wait(0.2)
        return _state(3)

    def worker():  # each thread opens its own lock file description, like separate processes
        results.append(ArtifactCache(tmp_path).get_or_create("gradpc_target", {"k": 1}, build))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]


def test_bad_kind_rejected(tmp_path):
    with pytest.raises(ConfigError):
        ArtifactCache(tmp_path).get_or_create("../evil", {}, lambda: _state(0))


def test_protocol_stage1_cache_hit_gives_identical_run(tmp_path):
    base = dict(dataset="digits", model="lr", epochs=2, fraction=0.1, device="cpu", seed=3)
    plain = run_protocol(RunSpec(**base, out=str(tmp_path / "plain")), progress=False, log=lambda m: None)
    cold = run_protocol(RunSpec(**base, out=str(tmp_path / "cold"), cache_dir=str(tmp_path / "c")), progress=False, log=lambda m: None)
    warm = run_protocol(RunSpec(**base, out=str(tmp_path / "warm"), cache_dir=str(tmp_path / "c")), progress=False, log=lambda m: None)
    assert (plain.cache["victim_clean"], cold.cache["victim_clean"], warm.cache["victim_clean"]) == (None, "miss", "hit")
    for key in ("clean_accuracy", "poisoned_accuracy", "accuracy_drop"):
        assert getattr(plain, key) == getattr(cold, key) == getattr(warm, key)
    states = [load_state(tmp_path / d / "victim_clean.safetensors") for d in ("plain", "cold", "warm")]
    assert len({tensor_fingerprint(*(s[k] for k in sorted(s))) for s in states}) == 1
    assert len(ArtifactCache(tmp_path / "c").entries("victim_clean")) == 1
    # a different recipe is a different entry
    run_protocol(RunSpec(**{**base, "epochs": 1}, out=str(tmp_path / "e1"), cache_dir=str(tmp_path / "c")),
                 progress=False, log=lambda m: None)
    assert len(ArtifactCache(tmp_path / "c").entries("victim_clean")) == 2


def test_the_protocol_hands_its_cache_to_the_attack_explicitly(tmp_path, monkeypatch):
    import poisonlab.cache as cache_mod
    from poisonlab.attacks.label_flip import LabelFlip

    assert not hasattr(cache_mod, "active") and not hasattr(cache_mod, "using")  # no hidden cache state
    seen = []
    original = LabelFlip._craft

    def spy(self, *a, **kw):
        seen.append(kw.get("cache"))
        return original(self, *a, **kw)

    monkeypatch.setattr(LabelFlip, "_craft", spy)
    cfg = dict(dataset="digits", model="lr", epochs=1, fraction=0.05, device="cpu")
    run_protocol(RunSpec(**cfg, out=str(tmp_path / "a"), cache_dir=str(tmp_path / "c")), progress=False, log=lambda m: None)
    run_protocol(RunSpec(**cfg, out=str(tmp_path / "b")), progress=False, log=lambda m: None)
    assert seen[0] is not None and seen[0].root == tmp_path / "c" and seen[1] is None


def test_source_fingerprint_follows_code_edits_and_enters_the_victim_key(tmp_path):
    from poisonlab.cache import _source_fingerprint

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code")
    before = source_fingerprint(pkg)
    assert len(before) == 64

    def fresh() -> str:
        _source_fingerprint.cache_clear()  # memoised per root within a process
        return source_fingerprint(pkg)

    (pkg / "notes.txt").write_text("edited, still not code")
    assert fresh() == before
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert fresh() != before
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    assert fresh() == before
    (pkg / "sub" / "b.py").rename(pkg / "b.py")  # same bytes, another module path
    assert fresh() != before



def test_an_edit_of_the_code_is_a_cache_miss(tmp_path, monkeypatch):
    import poisonlab.cache as cache_mod

    cfg = RunSpec(dataset="digits", model="lr", epochs=1, fraction=0.1, device="cpu", cache_dir=str(tmp_path / "c"))
    quiet = dict(progress=False, log=lambda m: None)
    first = run_protocol(replace(cfg, out=str(tmp_path / "a")), **quiet)
    again = run_protocol(replace(cfg, out=str(tmp_path / "b")), **quiet)
    assert (first.cache["victim_clean"], again.cache["victim_clean"]) == ("miss", "hit")
    (entry,) = ArtifactCache(tmp_path / "c").entries("victim_clean")
    assert entry.key["source_sha256"] == source_fingerprint()  # the stored key shows which code trained it
    monkeypatch.setattr(cache_mod, "source_fingerprint", lambda root=None: "0" * 64)  # "the code was edited"
    edited = run_protocol(replace(cfg, out=str(tmp_path / "c2")), **quiet)
    assert edited.cache["victim_clean"] == "miss"
    assert len(ArtifactCache(tmp_path / "c").entries("victim_clean")) == 2


def test_get_or_build_stores_the_info_record_beside_the_state(tmp_path):
    from poisonlab.cache import cached_build

    cache, calls = ArtifactCache(tmp_path), []

    def build():
        calls.append(1)
        return _state(0), {"accuracy": 12.5, "trace": [1.0, float("nan")], "name": "t"}

    s1, i1, h1 = cache.get_or_build("target", {"k": 1}, build)
    s2, i2, h2 = cache.get_or_build("target", {"k": 1}, build)
    assert (h1, h2, len(calls)) == (False, True, 1)
    assert i1["accuracy"] == i2["accuracy"] == 12.5 and i2["name"] == "t" and i2["trace"][0] == 1.0
    assert math.isnan(i2["trace"][1])  # NaN survives the JSON round trip
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert cache.get("target", {"k": 1}) is not None  # a plain get still reads it
    _, info, hit = cache.get_or_build("victim_clean", {"k": 1}, lambda: (_state(1), None))
    assert info == {} and not hit  # no record: an empty one
    state, info, hit = cached_build(None, "target", {"k": 2}, build)  # no cache: just builds
    assert not hit and info["name"] == "t" and len(calls) == 2
    _, info, hit = cached_build(cache, "target", {"k": 1}, build)
    assert hit and info["accuracy"] == 12.5 and len(calls) == 2


def test_info_records_take_numpy_and_torch_scalars_and_reject_the_rest(tmp_path):
    import numpy as np

    cache = ArtifactCache(tmp_path)
    _, info, _ = cache.get_or_build("target", {"k": 3}, lambda: (_state(0), {"a": np.float64(2.5), "b": torch.tensor(3)}))
    assert info == {"a": 2.5, "b": 3}
    with pytest.raises(ConfigError, match="info record"):
        cache.get_or_build("target", {"k": 4}, lambda: (_state(0), {"m": object()}))


def test_cache_clear_deletes_only_the_artifacts_it_lists(tmp_path, monkeypatch, capsys):
    """With POISONLAB_CACHE set, `poisonlab cache clear` removes the artifacts `ls` lists and keeps the
    converted pretrained weights, the trained VAEs, the extractors and the data beside them."""
    from safetensors.torch import save_file

    from poisonlab import paths
    from poisonlab.cli.main import main
    from poisonlab.models.pretrained import efficientnet

    root = tmp_path / "root"
    monkeypatch.setenv("POISONLAB_CACHE", str(root))
    monkeypatch.delenv("POISONLAB_DATA", raising=False)
    cache = ArtifactCache()
    assert cache.root == root / "artifacts"
    cache.get_or_create("victim_clean", {"k": 1}, lambda: _state(0))
    cache.get_or_create("target", {"k": 2}, lambda: _state(1))
    cache.get_or_create("tgda_generator", {"k": 3}, lambda: _state(2))
    weights = efficientnet.converted_path()
    weights.parent.mkdir(parents=True)
    save_file(_state(4), str(weights))  # where the converted EfficientNet weights live
    vae = paths.vae_dir() / "digits-0123456789ab"
    vae.mkdir(parents=True)
    (vae / "config.json").write_text("{}")
    extractor = paths.extractor_dir() / "digits-simclr-conv-0123456789ab.safetensors"
    extractor.parent.mkdir(parents=True)
    save_file(_state(5), str(extractor))
    data = paths.data_dir() / "mnist.npz"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"data")
    foreign = cache.root / "victim_clean" / "notes.safetensors"  # not an entry: not listed, not deleted
    save_file(_state(6), str(foreign))
    kept = [weights, vae / "config.json", extractor, data, foreign]

    assert main(["cache", "ls"]) == 0
    listing = capsys.readouterr().out
    assert "3 entries" in listing and all(k in listing for k in ("victim_clean", "target", "tgda_generator"))
    assert "kept by `cache clear`" in listing and "pretrained/ 1 file" in listing and "vae/ 1 file" in listing
    assert main(["cache", "clear", "--kind", "target"]) == 0
    assert "removed 1 cache entry" in capsys.readouterr().out
    assert sorted(e.kind for e in cache.entries()) == ["tgda_generator", "victim_clean"]
    assert main(["cache", "clear"]) == 0
    assert "removed 2 cache entries" in capsys.readouterr().out
    assert cache.entries() == [] and all(p.exists() for p in kept)
    assert sorted(p.name for p in root.iterdir()) == ["artifacts", "data", "extractors", "pretrained", "vae"]
    # an artifact directory pointed at the cache root by mistake: still only entries go (none here)
    assert main(["cache", "clear", "--cache-dir", str(root)]) == 0
    assert "removed 0 cache entries" in capsys.readouterr().out and all(p.exists() for p in kept)
    assert main(["cache", "ls", "--kind", "no_such_kind"]) == 2
    assert "unknown cache kind 'no_such_kind'" in capsys.readouterr().err
