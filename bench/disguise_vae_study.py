"""What makes a disguise look like its base? Unbounded disguises on the bench pairs against local
AutoencoderKLs that differ in spatial downsampling f, latent channels c_z (compression C·f²/c_z),
width and training, over a sweep of α, plus optimiser checks on the SD-like preset.

Every VAE is trained on CIFAR-10 once and cached (``tiny_vae``); a cached one is only loaded. For
each (VAE, α): SSIM of the disguise to its base, L∞ to the base, the latent distance to E(x_c)
relative to the base's (``latent_dist_rel``: 1 = no progress, 0 = latent matched), and the reveal's
SSIM to x_c against the VAE's own ceiling SSIM(D(E(x_c)), x_c). Same pairs as bench/disguises.py.

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/disguise_vae_study.py

Writes bench/results/disguise_vae_study.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402

from disguises import pairs  # noqa: E402
from poisonlab.data import load_dataset  # noqa: E402
from poisonlab.generative.disguise import craft_disguises, summarize, variant_config  # noqa: E402
from poisonlab.generative.metrics import ssim  # noqa: E402
from poisonlab.generative.vae import VAE_PRESETS, TinyVAEConfig, VAETrainConfig, tiny_vae  # noqa: E402
from poisonlab.options import config_to_dict  # noqa: E402

SD = VAE_PRESETS.get("sd")
VAES: dict[str, tuple[TinyVAEConfig, VAETrainConfig]] = {
    "small (f4, c4, 12x; preset small)": (VAE_PRESETS.get("small").arch, VAE_PRESETS.get("small").recipe),
    "f4, c1, 48x": (TinyVAEConfig(latent_channels=1), VAETrainConfig()),
    "f8, c16, 12x": (TinyVAEConfig(block_out_channels=(16, 32, 64, 64), latent_channels=16), VAETrainConfig()),
    "f8, c4, 48x, 2500 images x 10 epochs": (SD.arch, VAETrainConfig()),
    "f8, c4, 48x, 5000 images x 10 epochs (preset sd)": (SD.arch, SD.recipe),
    "f8, c4, 48x, 4x wider (32-64-128-128), 2500 images x 10 epochs": (TinyVAEConfig(block_out_channels=(32, 64, 128, 128)), VAETrainConfig()),
}
OPTIMISER_CHECKS = {"lr 0.003": {"lr": 0.003}, "lr 0.03": {"lr": 0.03}, "1000 steps": {"steps": 1000}}
KEYS = ("ssim_base", "linf_base", "latent_dist", "latent_dist_base", "latent_dist_rel", "reveal_ssim_copyright", "recon_ssim_copyright")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alphas", default="0.3,1,3,10")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=6)
    args = ap.parse_args()
    t_start = time.time()
    bundle = load_dataset("cifar10")
    x_c, x_b, idx = pairs(bundle.test, args.pairs)
    x_eval = bundle.test.x[-500:]
    alphas = [float(a) for a in args.alphas.split(",")]
    rows = []

    def run(name: str, vae, arch: TinyVAEConfig, recon: float, alpha: float, **opts) -> None:
        cfg = variant_config("unbounded", alpha=alpha, **{"steps": args.steps, **opts})
        t0 = time.time()
        res = craft_disguises(vae, x_b, x_c, cfg)
        m = {k: v for k, v in summarize(res.metrics).items() if k in KEYS}
        rows.append({"vae": name, "source": vae.source, "compression_ratio": arch.compression_ratio, "downsampling": arch.downsampling,
                     "latent_channels": arch.latent_channels, "test_reconstruction_ssim": recon, "alpha": alpha,
                     "steps": cfg.steps, "lr": cfg.lr, "optimiser_check": opts or None, **m, "seconds": time.time() - t0})
        print(f"{name:>48s} α={alpha:<4g} {str(opts or ''):>16s}: SSIM to base {m['ssim_base']:.3f}, L-inf {m['linf_base']:.3f}, "
              f"latent ratio {m['latent_dist_rel']:.3f}, reveal SSIM to x_c {m['reveal_ssim_copyright']:.3f} "
              f"(ceiling {m['recon_ssim_copyright']:.3f})", flush=True)

    vaes = {}
    for name, (arch, recipe) in VAES.items():
        t0 = time.time()
        vae = tiny_vae("cifar10", arch=arch, recipe=recipe)
        with torch.no_grad():
            recon = float(ssim(x_eval, vae.reveal(x_eval)).mean())
        vaes[name] = {"source": vae.source, "arch": config_to_dict(arch), "recipe": config_to_dict(recipe),
                      "latent_shape": list(vae.latent_shape((3, 32, 32))), "test_reconstruction_ssim_500": recon,
                      "load_or_train_seconds": time.time() - t0}
        for a in alphas:
            run(name, vae, arch, recon, a)
        if recipe == SD.recipe and arch == SD.arch:
            for opts in OPTIMISER_CHECKS.values():
                for a in (1.0, 3.0):
                    run(name, vae, arch, recon, a, **opts)
    common.save("disguise_vae_study", {"settings": vars(args), "pairs_test_index": idx, "vaes": vaes, "rows": rows,
                                       "total_seconds": time.time() - t_start})
    return 0


if __name__ == "__main__":
    sys.exit(main())
