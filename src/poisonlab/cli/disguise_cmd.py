"""``poisonlab disguise``: craft a disguise of a copyrighted image on a base image against a latent
autoencoder, reveal it, score it (thesis chapter 5). ``--vae`` is a local AutoencoderKL / Stable
Diffusion directory, or ``tiny:<dataset>[:<preset>]`` for a small VAE trained and cached here."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("disguise", help="craft a disguise of a copyrighted image (latent diffusion), reveal and score it")
    p.add_argument("--copyrighted", required=True, help="image file of the copyrighted work x_c")
    p.add_argument("--base", required=True, help="image file of the base image x_b the disguise should look like")
    p.add_argument("--vae", default="tiny:cifar10:sd",
                   help="local AutoencoderKL / SD pipeline directory, or tiny:<dataset>[:small|sd] (default tiny:cifar10:sd, "
                   "the Stable-Diffusion-like 48x VAE trained and cached here)")
    p.add_argument("--variant", default="unbounded", help="unbounded | bounded | flip | evasive (default unbounded)")
    p.add_argument("--alpha", type=float, help="latent-term divisor α (smaller = match the latent harder)")
    p.add_argument("--radius", type=float, help="L-inf bound on the perturbation (pixel scale 0-1)")
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--size", type=int, help="resize both images to SIZE x SIZE (default: the VAE's sample size)")
    p.add_argument("--out", default="runs/disguise", help="output directory (default runs/disguise)")
    p.add_argument("--data-dir", help="data directory for training the tiny VAE (default $POISONLAB_DATA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..generative.detect import latent_screening_scores, reconstruction_scores
    from ..generative.disguise import craft_disguises, summarize, variant_config
    from ..generative.images import image_grid, read_image, write_image
    from ..generative.vae import get_vae
    from ..artifacts import write_json

    overrides = {k: getattr(args, k) for k in ("alpha", "radius", "steps", "lr") if getattr(args, k) is not None}
    cfg = variant_config(args.variant, **overrides)
    vae = get_vae(args.vae, data_dir=args.data_dir, seed=args.seed).to(args.device)
    size = args.size or int(vae.vae.config.sample_size)
    if size <= 0:
        raise ConfigError(f"--size must be positive, got {size}")
    channels = 3 if vae.in_channels == 3 else 1
    x_c = read_image(args.copyrighted, size=size, channels=channels).to(args.device)
    x_b = read_image(args.base, size=size, channels=channels).to(args.device)
    t0 = time.time()
    res = craft_disguises(vae, x_b, x_c, cfg, progress=True)
    seconds = time.time() - t0
    out = Path(args.out)
    write_image(out / "disguise.png", res.disguise)
    write_image(out / "reveal.png", res.reveal)
    with torch.no_grad():
        recon_c = vae.reveal(x_c)
        det = {
            "reconstruction_1_minus_ssim": float(reconstruction_scores(vae, res.disguise)[0]),
            "reconstruction_1_minus_ssim_base": float(reconstruction_scores(vae, x_b)[0]),
            "latent_screening": float(latent_screening_scores(vae, res.disguise, x_c)[0]),
            "latent_screening_base": float(latent_screening_scores(vae, x_b, x_c)[0]),
        }
    metrics = summarize(res.metrics)
    image_grid(
        out / "grid.png",
        [("base", x_b), ("disguise", res.disguise), ("reveal D(E(x_d))", res.reveal), ("copyrighted", x_c), ("D(E(x_c))", recon_c)],
        title=f"{args.variant}: latent dist {metrics['latent_dist']:.3f} (base {metrics['latent_dist_base']:.3f}), "
        f"SSIM to base {metrics['ssim_base']:.3f}, reveal SSIM to copyrighted {metrics['reveal_ssim_copyright']:.3f}",
    )
    record = {
        "variant": args.variant,
        "config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
        "vae": vae.source,
        "size": size,
        "seconds": seconds,
        "metrics": metrics,
        "detector_scores": det,
        "files": {k: str(out / f"{k}.png") for k in ("disguise", "reveal", "grid")},
    }
    write_json(out / "metrics.json", record)
    for k in ("latent_dist", "latent_dist_base", "latent_dist_rel", "ssim_base", "lpips_base", "linf_base", "ssim_copyright", "reveal_ssim_copyright", "recon_ssim_copyright"):
        print(f"{k:>24s}: {metrics[k]:.4f}")
    print(f"wrote {out}/disguise.png, reveal.png, grid.png, metrics.json")
    return 0
