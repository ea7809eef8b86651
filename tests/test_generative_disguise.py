"""Latent autoencoder wrapper, disguise crafting, detectors and the disguise CLI, on tiny randomly
initialised AutoencoderKLs (seconds on one CPU thread)."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from poisonlab.cli.main import main  # noqa: E402
from poisonlab.errors import ConfigError, DataError, UnknownNameError  # noqa: E402
from poisonlab.generative.detect import (  # noqa: E402
    DETECTORS,
    detection_report,
    latent_screening_scores,
    reconstruction_scores,
)
from poisonlab.generative.disguise import (  # noqa: E402
    _PIXELS,
    VARIANTS,
    DisguiseConfig,
    craft_disguises,
    disguise_loss,
    variant_config,
)
from poisonlab.generative.images import read_image, write_image  # noqa: E402
from poisonlab.generative.metrics import ssim  # noqa: E402
from poisonlab.generative.vae import (  # noqa: E402
    VAE_PRESETS,
    TinyVAEConfig,
    VAETrainConfig,
    build_tiny_vae,
    load_vae,
    parse_tiny_spec,
    save_vae,
    tiny_vae,
)

SMALL = TinyVAEConfig(block_out_channels=(8, 16), norm_num_groups=4, latent_channels=2, sample_size=32, mid_block_add_attention=False)


@pytest.fixture(scope="module")
def vae():
    return build_tiny_vae(SMALL, seed=0)


def _images(n, seed, c=3, size=32):
    g = torch.Generator().manual_seed(seed)
    # smooth random images (upsampled noise) look more like photos than white noise
    return torch.nn.functional.interpolate(torch.rand(n, c, 8, 8, generator=g), size=size, mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------ VAE
def test_vae_shapes_range_and_grey_input(vae):
    x = _images(2, 0)
    z = vae.encode(x)
    assert z.shape == (2, 2, 16, 16)
    r = vae.reveal(x)
    assert r.shape == x.shape and r.min() >= 0 and r.max() <= 1
    grey = x[:, :1]
    assert vae.reveal(grey).shape == grey.shape  # grey -> RGB VAE -> grey
    assert torch.allclose(vae.encode(grey), vae.encode(grey.expand(-1, 3, -1, -1)))
    assert vae.latent_shape((3, 32, 32)) == (2, 16, 16)


def test_vae_save_load_roundtrip_and_sd_layout(vae, tmp_path):
    x = _images(2, 1)
    save_vae(vae, tmp_path / "plain")
    save_vae(vae, tmp_path / "pipe" / "vae")  # Stable Diffusion pipeline layout: <dir>/vae/
    assert (tmp_path / "plain" / "diffusion_pytorch_model.safetensors").is_file()
    for d in ("plain", "pipe"):
        other = load_vae(tmp_path / d)
        assert torch.equal(other.encode(x), vae.encode(x))
    with pytest.raises(DataError):
        load_vae(tmp_path / "nothing")


def test_train_vae_reduces_loss_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path))
    arch = TinyVAEConfig(in_channels=1, block_out_channels=(8, 8), norm_num_groups=4, latent_channels=2, sample_size=16, mid_block_add_attention=False)
    recipe = VAETrainConfig(epochs=3, batch_size=16, lr=3e-3, num_images=64)
    m = tiny_vae("digits", arch=arch, recipe=recipe, progress=False)
    meta = json.loads(next(tmp_path.glob("vae/digits-*/poisonlab.json")).read_text())
    assert meta["epoch_losses"][-1] < meta["epoch_losses"][0]
    assert m.scaling_factor == pytest.approx(meta["scaling_factor"]) and m.scaling_factor != 0.18215
    again = tiny_vae("digits", arch=arch, recipe=recipe, progress=False)  # from the cache, no training
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.encode(x), m.encode(x)) and again.source == m.source
    with pytest.raises(ConfigError):
        VAETrainConfig.from_dict({"epochs": 1, "bogus": 2})


def test_vae_presets_compression_ratios():
    assert set(VAE_PRESETS.names()) == {"small", "sd"}
    small, sd = VAE_PRESETS.get("small").arch, VAE_PRESETS.get("sd").arch
    assert (small.downsampling, small.compression_ratio) == (4, 12.0)
    # Stable Diffusion's VAE: f = 8, 4 latent channels -> 3 * 64 / 4 = 48 numbers in per number out
    assert (sd.downsampling, sd.latent_channels, sd.compression_ratio) == (8, 4, 48.0)
    m = build_tiny_vae(sd, seed=0)
    assert m.latent_shape((3, 32, 32)) == (4, 4, 4)
    assert 3 * 32 * 32 / (4 * 4 * 4) == sd.compression_ratio
    assert parse_tiny_spec("tiny:cifar10") == ("cifar10", "small")
    assert parse_tiny_spec("tiny:cifar10:sd") == ("cifar10", "sd")
    with pytest.raises(UnknownNameError):
        parse_tiny_spec("tiny:cifar10:huge")
    for bad in ("tiny:", "tiny:a:b:c"):
        with pytest.raises(ConfigError):
            parse_tiny_spec(bad)


def test_sd_preset_trains_and_caches(tmp_path, monkeypatch):
    """The SD-like preset's own architecture (not a shrunken copy) trains, caches and reloads."""
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path))
    recipe = VAETrainConfig(epochs=2, batch_size=8, lr=3e-3, num_images=16)
    m = tiny_vae("digits", recipe=recipe, preset="sd", progress=False)
    meta = json.loads(next(tmp_path.glob("vae/digits-*/poisonlab.json")).read_text())
    assert meta["arch"]["block_out_channels"] == list(VAE_PRESETS.get("sd").arch.block_out_channels)
    assert meta["arch"]["in_channels"] == 1  # the preset's channels follow the dataset
    assert len(meta["epoch_losses"]) == 2 and all(np.isfinite(meta["epoch_losses"]))
    assert m.latent_shape((1, 32, 32)) == (4, 4, 4)  # 8x8 digits padded to 32x32, f = 8
    again = tiny_vae("digits", recipe=recipe, preset="sd", progress=False)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.encode(x), m.encode(x)) and again.source == m.source
    small = tiny_vae("digits", recipe=recipe, preset="small", progress=False)  # another key, another cache entry
    assert small.source != m.source and len(list(tmp_path.glob("vae/digits-*"))) == 2


# ------------------------------------------------------------------------------- disguise
def test_variants_and_config_validation():
    assert set(VARIANTS.names()) == {"unbounded", "bounded", "flip", "evasive"}
    assert variant_config("flip").flip_robust and variant_config("evasive").evasive_weight > 0
    assert variant_config("bounded", radius=0.1).radius == 0.1
    with pytest.raises(ConfigError):
        variant_config("unbounded", nope=1)
    with pytest.raises(UnknownNameError):
        variant_config("invisible")
    for bad in ({"alpha": 0}, {"radius": 1.5}, {"steps": -1}, {"ssim_weight": -1.0}):
        with pytest.raises(ConfigError):
            DisguiseConfig.from_dict(bad)


@pytest.mark.parametrize("variant", ["unbounded", "flip", "evasive"])
def test_disguise_loss_gradient_matches_finite_differences(variant):
    vae = build_tiny_vae(SMALL, seed=1).double()
    x_b, x_c = _images(1, 2).double(), _images(1, 3).double()
    cfg = variant_config(variant)
    with torch.no_grad():
        z_c, z_cf = vae.encode(x_c), vae.encode(x_c.flip(-1))
    x = (0.8 * x_b + 0.2 * x_c).requires_grad_(True)
    f = lambda t: disguise_loss(vae, t, x_b, z_c, cfg, z_cf).sum()  # noqa: E731
    (g,) = torch.autograd.grad(f(x), x)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    h = 1e-6
    fd = (f(x + h * d) - f(x - h * d)) / (2 * h)
    assert (g * d).sum().item() == pytest.approx(fd.item(), rel=1e-5)


def test_craft_contract_and_latent_match(vae):
    x_b, x_c = _images(2, 5), _images(2, 6)
    b0, c0 = x_b.clone(), x_c.clone()
    res = craft_disguises(vae, x_b, x_c, DisguiseConfig(alpha=0.02, steps=60, lr=0.02))
    assert torch.equal(x_b, b0) and torch.equal(x_c, c0)  # inputs untouched
    assert res.disguise.shape == x_b.shape and res.disguise.min() >= 0 and res.disguise.max() <= 1
    assert all(a >= b for a, b in zip(res.history, res.history[1:]))  # best iterate kept
    m = res.metrics
    assert (m["latent_dist"] < 0.5 * m["latent_dist_base"]).all(), m
    assert torch.allclose(m["latent_dist_rel"], m["latent_dist"] / m["latent_dist_base"], rtol=1e-5)
    assert torch.allclose(m["reveal_ssim_copyright"], ssim(vae.reveal(res.disguise), x_c))
    # steps = 0 returns the base image itself
    same = craft_disguises(vae, x_b, x_c, DisguiseConfig(steps=0))
    assert torch.equal(same.disguise, x_b) and torch.allclose(same.metrics["latent_dist"], same.metrics["latent_dist_base"])


def test_bounded_variant_respects_radius(vae):
    x_b, x_c = _images(1, 7), _images(1, 8)
    res = craft_disguises(vae, x_b, x_c, variant_config("bounded", radius=4 / 255, steps=20, lr=0.05))
    assert (res.disguise - x_b).abs().max() <= 4 / 255 + 1e-7
    assert res.metrics["linf_base"].item() <= 4 / 255 + 1e-7


def test_flip_variant_matches_flipped_latent(vae):
    x_b, x_c = _images(1, 9), _images(1, 10)
    res = craft_disguises(vae, x_b, x_c, variant_config("flip", alpha=0.02, steps=60, lr=0.02))
    m = res.metrics
    assert m["latent_dist"].item() < 0.6 * m["latent_dist_base"].item()
    flip_base = (vae.encode(x_b.flip(-1)) - vae.encode(x_c.flip(-1))).norm() / vae.encode(x_c.flip(-1)).norm()
    assert m["latent_dist_flip"].item() < 0.6 * flip_base.item()


def test_bad_images_raise(vae):
    with pytest.raises(DataError):
        craft_disguises(vae, _images(1, 0), _images(2, 0))
    with pytest.raises(DataError):
        craft_disguises(vae, _images(1, 0) * 2, _images(1, 1))


def _reference_craft(vae, x_b, x_c, cfg, start):
    """The plain loop: score every iterate with a fresh forward pass after its step (slow reference)."""
    with torch.no_grad():
        z_c = vae.encode(x_c)
        best, best_loss = x_b.clone(), disguise_loss(vae, x_b, x_b, z_c, cfg)

        def keep(x):
            nonlocal best_loss
            cur = disguise_loss(vae, x, x_b, z_c, cfg)
            best[cur < best_loss] = x[cur < best_loss]
            best_loss = torch.minimum(cur, best_loss)

        keep(start)
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    history = [float(best_loss.sum())]
    for _ in range(cfg.steps):
        opt.zero_grad()
        disguise_loss(vae, x, x_b, z_c, cfg).sum().backward()
        opt.step()
        with torch.no_grad():
            x.copy_(_PIXELS.project_linf(x, x_b, cfg.radius))
            keep(x)
        history.append(float(best_loss.sum()))
    return best, history


@pytest.mark.parametrize("init_noise", [0.0, 0.05])
def test_craft_scores_each_iterate_once_and_matches_the_plain_loop(vae, init_noise, monkeypatch):
    import poisonlab.generative.disguise as D

    x_b, x_c = _images(2, 20), _images(2, 21)
    cfg = DisguiseConfig(alpha=0.05, steps=12, lr=0.03, radius=16 / 255, init_noise=init_noise)
    calls = []
    monkeypatch.setattr(D, "disguise_loss", lambda *a, **k: calls.append(1) or disguise_loss(*a, **k))
    res = craft_disguises(vae, x_b, x_c, cfg, generator=torch.Generator().manual_seed(3))
    monkeypatch.undo()
    # the base, the noisy start (when there is one), one per step, the last iterate
    assert len(calls) == 1 + (init_noise > 0) + cfg.steps + 1
    start = x_b
    if init_noise:
        noise = torch.rand(x_b.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
        start = _PIXELS.project_linf(x_b + init_noise * noise, x_b, cfg.radius)
        assert not torch.equal(start, x_b)
    best, history = _reference_craft(vae, x_b, x_c, cfg, start)
    assert torch.equal(res.disguise, best)
    assert res.history == history and len(history) == cfg.steps + 1


def test_init_noise_is_the_seeded_random_start(vae):
    x_b, x_c = _images(1, 22), _images(1, 23)
    cfg = variant_config("bounded", radius=8 / 255, alpha=0.05, steps=4, lr=0.02, init_noise=0.02)

    def run(seed, c=cfg):
        return craft_disguises(vae, x_b, x_c, c, generator=torch.Generator().manual_seed(seed)).disguise

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    assert (run(2) - x_b).abs().max() <= 8 / 255 + 1e-7
    no_noise = variant_config("bounded", radius=8 / 255, alpha=0.05, steps=4, lr=0.02)
    assert torch.equal(run(0, no_noise), run(1, no_noise))  # without init_noise nothing is random
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="init_noise"):
            DisguiseConfig(init_noise=bad)


# ------------------------------------------------------------------------------ detection
def test_latent_screening_matches_brute_force(vae):
    x, prot = _images(3, 11), _images(2, 12)
    got = latent_screening_scores(vae, x, prot)
    s = vae.scaling_factor
    with torch.no_grad():
        for i in range(3):
            best = -np.inf
            for j in range(2):
                dp = ((x[i] - prot[j]).double().pow(2).mean().sqrt()).item()
                dl = ((s * (vae.encode(x[i : i + 1]) - vae.encode(prot[j : j + 1]))).double().pow(2).mean().sqrt()).item()
                best = max(best, np.log(dp + 1e-6) - np.log(dl + 1e-6))
            assert got[i].item() == pytest.approx(best, rel=1e-5)
    with pytest.raises(ConfigError):
        latent_screening_scores(vae, x, None)


def test_reconstruction_scores_definition_and_batching(vae):
    x = _images(5, 13)
    full = reconstruction_scores(vae, x)
    assert torch.allclose(full, 1 - ssim(x, vae.reveal(x)), atol=1e-6)
    assert torch.allclose(reconstruction_scores(vae, x, batch=2), full, atol=1e-6)
    assert (reconstruction_scores(vae, x, metric="lpips") >= 0).all()
    with pytest.raises(ConfigError):
        reconstruction_scores(vae, x, metric="psnr")
    assert set(DETECTORS.names()) == {"latent_screening", "reconstruction"}


def test_detection_report_known_answers():
    clean = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    r = detection_report(clean, torch.tensor([2.0, 3.0]))
    assert r["auc"] == 1.0 and r["fpr_at_tpr"] == 0.0 and r["fpr_at_tpr1"] == 0.0
    r = detection_report(clean, torch.tensor([0.0, -1.0]))
    assert r["auc"] == 0.0 and r["fpr_at_tpr1"] == 1.0
    # poisons 0.75 and 0.95: AUC = (7 + 9) / 20; all caught at 0.75 -> clean 0.8, 0.9, 1.0 flagged
    r = detection_report(clean, torch.tensor([0.75, 0.95]))
    assert r["auc"] == pytest.approx(16 / 20) and r["fpr_at_tpr1"] == pytest.approx(0.3)
    assert r["fpr_at_tpr"] == pytest.approx(0.3)  # 95 % of 2 poisons = both
    r = detection_report(clean, torch.tensor([0.75, 0.95]), tpr=0.5)
    assert r["fpr_at_tpr"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------ CLI
def test_disguise_cli_end_to_end(vae, tmp_path, capsys):
    save_vae(vae, tmp_path / "vae")
    write_image(tmp_path / "c.png", _images(1, 14))
    write_image(tmp_path / "b.png", _images(1, 15)[:, :1])  # a grey base image
    assert read_image(tmp_path / "b.png").shape == (1, 1, 32, 32)
    out = tmp_path / "out"
    argv = ["disguise", "--copyrighted", str(tmp_path / "c.png"), "--base", str(tmp_path / "b.png"), "--vae", str(tmp_path / "vae"),
            "--variant", "evasive", "--alpha", "0.02", "--steps", "15", "--out", str(out)]
    assert main(argv) == 0
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["variant"] == "evasive" and rec["config"]["steps"] == 15 and rec["config"]["alpha"] == 0.02
    assert rec["metrics"]["latent_dist"] < rec["metrics"]["latent_dist_base"]
    for f in ("disguise.png", "reveal.png", "grid.png"):
        assert (out / f).stat().st_size > 0
    assert read_image(out / "disguise.png").shape == (1, 3, 32, 32)
    capsys.readouterr()
    assert main(argv[:-2] + ["--out", str(out), "--variant", "nope"]) == 2
    assert main(["disguise", "--copyrighted", str(tmp_path / "missing.png"), "--base", str(tmp_path / "b.png"), "--vae", str(tmp_path / "vae")]) == 2
    assert main(["disguise", "--copyrighted", str(tmp_path / "c.png"), "--base", str(tmp_path / "b.png"), "--vae", "no-such-vae"]) == 2
    assert "error" in capsys.readouterr().err


@pytest.fixture
def no_vae_work(monkeypatch, tmp_path):
    """Fail the test if the disguise command loads or trains a VAE (its checks must come first)."""
    import poisonlab.generative.vae as vae_mod

    def forbidden(*_a, **_k):
        raise AssertionError("the VAE was loaded or trained before the inputs were checked")

    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path / "cache"))  # nothing cached: tiny:... would train
    for fn in ("train_vae", "tiny_vae", "load_vae", "get_vae"):
        monkeypatch.setattr(vae_mod, fn, forbidden)
    import poisonlab.generative.taef2 as taef2_mod
    import poisonlab.models.pretrained.taef2 as taef2_weights

    monkeypatch.setattr(taef2_mod, "load_taef2_autoencoder", forbidden)
    monkeypatch.setattr(taef2_weights, "load_taef2", forbidden)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("poisonlab: error:") and "\n" not in err, err
    return err


def test_disguise_cli_checks_every_input_before_any_vae_work(tmp_path, capsys, no_vae_work):
    write_image(tmp_path / "ok.png", _images(1, 16))
    (tmp_path / "fake.png").write_text("not an image, only its name says so\n")
    (tmp_path / "blocker").write_text("a file where --out wants a folder")
    (tmp_path / "sd" / "vae").mkdir(parents=True)
    (tmp_path / "sd" / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [8, 16, 32, 32], "sample_size": 32}))
    ok = str(tmp_path / "ok.png")

    def run(*extra, copyrighted=ok, base=ok, vae="tiny:digits"):
        return main(["disguise", "--copyrighted", copyrighted, "--base", base, "--vae", vae, "--steps", "1",
                     "--out", str(tmp_path / "out"), *extra])

    cases = [
        (dict(copyrighted=str(tmp_path / "missing.png")), "--copyrighted: image file", "does not exist"),
        (dict(base=str(tmp_path / "fake.png")), "--base:", "is not an image file"),
        (dict(base=str(tmp_path)), "--base:", "is not a file"),
        (dict(vae="tiny:no_such_data"), "unknown dataset", "no_such_data"),
        (dict(vae=str(tmp_path / "nothing")), "VAE", "local AutoencoderKL directory"),
        (dict(vae="taef3"), "VAE 'taef3'", "give 'taef2'"),
    ]
    for kwargs, *needles in cases:
        assert run(**kwargs) == 2, kwargs
        err = _one_error_line(capsys)
        assert all(n in err for n in needles), err
    for extra, needle in ((["--variant", "invisible"], "unknown disguise variant"), (["--size", "30"], "multiple of"),
                          (["--size", "0"], "--size must be positive"), (["--alpha", "0"], "alpha"),
                          (["--device", "tpu"], "--device"), (["--out", str(tmp_path / "blocker")], "not a folder")):
        assert run(*extra) == 2, extra
        assert needle in _one_error_line(capsys)
    # a local SD-style VAE: its geometry is read from config.json (f = 8) without loading it
    assert run("--size", "36", vae=str(tmp_path / "sd")) == 2
    assert "downsampling factor 8" in _one_error_line(capsys)
    # taef2 (f = 8) likewise, and --init-noise is checked with the other disguise options
    for extra, needle in ((["--size", "36"], "downsampling factor 8"), (["--init-noise", "2"], "init_noise")):
        assert run(*extra, vae="taef2") == 2, extra
        assert needle in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_disguise_cli_valid_inputs_reach_the_vae(tmp_path, capsys, no_vae_work):
    """The checks pass valid inputs through: the first work is getting the VAE (forbidden here)."""
    write_image(tmp_path / "ok.png", _images(1, 17))
    with pytest.raises(AssertionError, match="before the inputs were checked"):
        main(["disguise", "--copyrighted", str(tmp_path / "ok.png"), "--base", str(tmp_path / "ok.png"),
              "--vae", "tiny:digits", "--size", "16", "--out", str(tmp_path / "out")])
    with pytest.raises(AssertionError, match="before the inputs were checked"):
        main(["disguise", "--copyrighted", str(tmp_path / "ok.png"), "--base", str(tmp_path / "ok.png"),
              "--vae", "taef2", "--size", "32", "--out", str(tmp_path / "out")])


def test_disguise_cli_with_the_shipped_taef2(tmp_path, capsys):
    """``--vae taef2``: the real pretrained FLUX.2-latent autoencoder, no training, end to end."""
    write_image(tmp_path / "c.png", _images(1, 24, size=48))
    write_image(tmp_path / "b.png", _images(1, 25, size=40)[:, :1])  # grey, another size: resized to --size
    out = tmp_path / "out"
    argv = ["disguise", "--copyrighted", str(tmp_path / "c.png"), "--base", str(tmp_path / "b.png"), "--vae", "taef2",
            "--size", "32", "--alpha", "0.05", "--lr", "0.03", "--steps", "6", "--init-noise", "0.01", "--seed", "1",
            "--out", str(out)]
    assert main(argv) == 0
    rec = json.loads((out / "metrics.json").read_text())
    assert "taef2" in rec["vae"] and "FLUX.2" in rec["vae"]
    assert rec["size"] == 32 and rec["seed"] == 1 and rec["config"]["init_noise"] == 0.01 and rec["config"]["steps"] == 6
    assert rec["metrics"]["latent_dist"] < rec["metrics"]["latent_dist_base"]
    for f in ("disguise.png", "reveal.png", "grid.png"):
        assert (out / f).stat().st_size > 0
    assert read_image(out / "disguise.png").shape == (1, 3, 32, 32)
    assert "craft disguises" in capsys.readouterr().err  # the progress bar
    assert main(argv[:-2] + ["--out", str(out), "--vae", "taef3"]) == 2
    assert "give 'taef2'" in capsys.readouterr().err


def test_open_image_errors_are_one_line(tmp_path):
    from poisonlab.generative.images import image_tensor, open_image

    (tmp_path / "fake.png").write_text("text")
    for path in (tmp_path / "fake.png", tmp_path / "missing.png", tmp_path):
        with pytest.raises(DataError) as err:
            open_image(path, "--base")
        assert str(err.value).startswith("--base:") and "\n" not in str(err.value)
    write_image(tmp_path / "ok.png", _images(1, 18))
    truncated = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(truncated[: len(truncated) // 2])
    with pytest.raises(DataError):
        open_image(tmp_path / "cut.png")
    img = open_image(tmp_path / "ok.png")
    assert image_tensor(img, size=16, channels=1).shape == (1, 1, 16, 16)
    assert torch.equal(read_image(tmp_path / "ok.png"), image_tensor(img))
    with pytest.raises(ConfigError):
        image_tensor(img, size=0)


def test_image_grid_leaves_pyplot_alone(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    from poisonlab.generative.images import image_grid

    backend, figs = matplotlib.get_backend(), plt.get_fignums()
    path = image_grid(tmp_path / "g" / "grid.png", [("a", _images(2, 19)), ("b", _images(1, 20)[:, :1])],
                      captions=[["x", "y"], ["z"]], title="t")
    assert path.stat().st_size > 0 and matplotlib.get_backend() == backend and plt.get_fignums() == figs


def test_vae_cli_trains_caches_and_saves(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POISONLAB_CACHE", str(tmp_path / "cache"))
    argv = ["vae", "--dataset", "digits", "--preset", "small", "--epochs", "1", "--num-images", "16", "--save", str(tmp_path / "saved")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "test reconstruction SSIM" in out and "latent shape (4, 8, 8)" in out
    assert load_vae(tmp_path / "saved").in_channels == 1  # digits are grey: a 1-channel VAE
    assert main(["vae", "--dataset", "digits", "--epochs", "-1"]) == 2
    capsys.readouterr()
    assert main(["vae", "--dataset", "digits", "--preset", "sd", "--epochs", "1", "--num-images", "16"]) == 0
    assert "latent shape (4, 4, 4) (16x compression)" in capsys.readouterr().out  # grey: 1 * 8² / 4
    assert main(["vae", "--dataset", "digits", "--preset", "huge"]) == 2
