"""``poisonlab vae``: train (or load from the cache) the small AutoencoderKL used offline by the
disguise commands, and report its reconstruction quality: argument parsing and one
:func:`poisonlab.train_vae` call."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("vae", help="train / cache the small AutoencoderKL for the disguise commands")
    p.add_argument("--dataset", default="cifar10", help="training images (default cifar10; 28x28 sets are padded to 32x32)")
    p.add_argument("--preset", default="sd",
                   help="architecture + recipe: small (32x32 -> 4x8x8, 12x compression) or sd (Stable-Diffusion-like "
                   "f = 8, 4 latent channels: 32x32 -> 4x4x4, 48x); default sd, the one 'disguise' uses by default")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--num-images", type=int, help="number of training images")
    p.add_argument("--data-dir", help="data directory (default $POISONLAB_DATA)")
    p.add_argument("--retrain", action="store_true", help="train again even if cached")
    p.add_argument("--save", help="also copy the VAE to this directory (diffusers layout, safetensors)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto",
                   help="where to train and evaluate the VAE: auto (default; CUDA when available), cpu, cuda, cuda:N")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..api import train_vae

    res = train_vae(args.dataset, preset=args.preset, epochs=args.epochs, num_images=args.num_images, data_dir=args.data_dir,
                    retrain=args.retrain, save=args.save, seed=args.seed, device=args.device)
    print(f"VAE {res.source} in {res.cache_dir}")
    print(f"latent shape {res.latent_shape} ({res.compression:g}x compression), scaling factor {res.scaling_factor:.4f}")
    print(f"test reconstruction SSIM ({res.test_images} images): mean {res.test_ssim_mean:.4f}, min {res.test_ssim_min:.4f}")
    if res.saved is not None:
        print(f"saved to {args.save}")
    return 0
