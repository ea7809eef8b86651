"""``poisonlab disguise``: craft a disguise of a copyrighted image on a base image against a latent
autoencoder, reveal it, score it (thesis chapter 5): argument parsing and one :func:`poisonlab.disguise`
call. ``--vae`` is ``taef2`` (the shipped pretrained tiny autoencoder of FLUX.2's latent space; not
Stable Diffusion's VAE), a local AutoencoderKL / Stable Diffusion directory, or
``tiny:<dataset>[:<preset>]`` for a small VAE trained and cached here.

``pl.disguise`` checks every input before any work (loading or training the VAE can take minutes);
a bad input ends with one line and exit code 2.
"""

from __future__ import annotations

import argparse

#: the flags that override the variant's options
OPTIONS = ("alpha", "radius", "steps", "lr", "init_noise")


def add_parser(sub) -> None:
    p = sub.add_parser("disguise", help="craft a disguise of a copyrighted image (latent diffusion), reveal and score it")
    p.add_argument("--copyrighted", required=True, help="image file of the copyrighted work x_c")
    p.add_argument("--base", required=True, help="image file of the base image x_b the disguise should look like")
    p.add_argument("--vae", default="tiny:cifar10:sd",
                   help="taef2 (the shipped pretrained tiny autoencoder of FLUX.2's latent space, 256x256 by default; "
                   "not SD's VAE), a local AutoencoderKL / SD pipeline directory, or tiny:<dataset>[:small|sd] "
                   "(default tiny:cifar10:sd, the Stable-Diffusion-like 48x VAE trained and cached here)")
    p.add_argument("--variant", default="unbounded", help="unbounded | bounded | flip | evasive (default unbounded)")
    p.add_argument("--alpha", type=float, help="latent-term divisor α (smaller = match the latent harder)")
    p.add_argument("--radius", type=float, help="L-inf bound on the perturbation (pixel scale 0-1)")
    p.add_argument("--steps", type=int, help="optimisation steps")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--init-noise", type=float, dest="init_noise",
                   help="start from the base plus uniform noise of this amplitude (pixel scale 0-1), drawn from --seed "
                   "(default 0: start at the base)")
    p.add_argument("--size", type=int, help="resize both images to SIZE x SIZE (default: the VAE's sample size)")
    p.add_argument("--out", default="runs/disguise", help="output directory (default runs/disguise)")
    p.add_argument("--data-dir", help="data directory for training the tiny VAE (default $POISONLAB_DATA)")
    p.add_argument("--seed", type=int, default=0, help="seeds the tiny VAE's training and --init-noise (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..api import disguise

    options = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    res = disguise(args.copyrighted, args.base, vae=args.vae, variant=args.variant, options=options, size=args.size,
                   out=args.out, data_dir=args.data_dir, seed=args.seed, device=args.device)
    for k in ("latent_dist", "latent_dist_base", "latent_dist_rel", "ssim_base", "lpips_base", "linf_base", "ssim_copyright",
              "reveal_ssim_copyright", "recon_ssim_copyright"):
        print(f"{k:>24s}: {res.metrics[k]:.4f}")
    print(f"wrote {res.directory}/disguise.png, reveal.png, grid.png, metrics.json")
    return 0
