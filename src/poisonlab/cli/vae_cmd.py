"""``poisonlab vae``: train (or load from the cache) the small AutoencoderKL used offline by the
disguise commands, and report its reconstruction quality."""

from __future__ import annotations

import argparse

from ..devices import resolve_device


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
    import torch

    from ..data import load_dataset
    from ..generative.metrics import ssim
    from ..generative.vae import VAE_PRESETS, fit_size, save_vae, tiny_vae
    from ..options import config_to_dict
    from ..paths import vae_dir
    device = resolve_device(args.device)  # an impossible device fails here, before anything is trained
    preset = VAE_PRESETS.get(args.preset)
    opts = {k: v for k, v in (("epochs", args.epochs), ("num_images", args.num_images)) if v is not None}
    recipe = type(preset.recipe).from_dict({**config_to_dict(preset.recipe), **opts})
    vae = tiny_vae(args.dataset, data_dir=args.data_dir, recipe=recipe, seed=args.seed, retrain=args.retrain, preset=args.preset,
                   device=device)
    test = load_dataset(args.dataset, args.data_dir).test
    x = fit_size(test.x[:500], int(vae.vae.config.sample_size)).to(device)
    with torch.no_grad():
        s = ssim(x, vae.reveal(x))
    print(f"VAE {vae.source} in {vae_dir()}")
    c, h, w = (int(s) for s in x.shape[1:])
    zs = vae.latent_shape((c, h, w))
    ratio = x[0].numel() / (zs[0] * zs[1] * zs[2])
    print(f"latent shape {zs} ({ratio:g}x compression), scaling factor {vae.scaling_factor:.4f}")
    print(f"test reconstruction SSIM (500 images): mean {float(s.mean()):.4f}, min {float(s.min()):.4f}")
    if args.save:
        save_vae(vae, args.save)
        print(f"saved to {args.save}")
    return 0
