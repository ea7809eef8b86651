"""``poisonlab disguise``: craft a disguise of a copyrighted image on a base image against a latent
autoencoder, reveal it, score it (thesis chapter 5). ``--vae`` is ``taef2`` (the shipped pretrained
tiny autoencoder of FLUX.2's latent space; not Stable Diffusion's VAE), a local AutoencoderKL /
Stable Diffusion directory, or ``tiny:<dataset>[:<preset>]`` for a small VAE trained and cached here.

Every input is checked before any work (loading or training the VAE can take minutes): the variant
and its options, the device, the VAE spec, both image files (present, readable, decodable images),
the output folder, and the image size against the VAE's geometry (taef2's f = 8, the tiny preset, or
the local ``config.json``, without loading weights). A bad input ends with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError

#: the SSIM window of the metrics (generative.metrics.ssim's default): images must be at least this large
MIN_SIZE = 7


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
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..artifacts import write_json
    from ..generative.detect import latent_screening_scores, reconstruction_scores
    from ..generative.disguise import craft_disguises, summarize, variant_config
    from ..generative.images import image_grid, image_tensor, open_image, write_image
    from ..generative.vae import LatentAutoencoder, get_vae
    from ..seeding import torch_generator

    # ---- every check before any work (the VAE may train for minutes)
    overrides = {k: getattr(args, k) for k in ("alpha", "radius", "steps", "lr", "init_noise") if getattr(args, k) is not None}
    cfg = variant_config(args.variant, **overrides)
    _check_device(args.device)
    geometry = vae_geometry(args.vae)
    size = check_size(args.size, geometry)
    img_c = open_image(args.copyrighted, "--copyrighted")
    img_b = open_image(args.base, "--base")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")

    vae = get_vae(args.vae, data_dir=args.data_dir, seed=args.seed, device=args.device)
    size = size or geometry.sample_size
    if not size:  # a VAE folder whose config names no sample size (taef2's geometry always does)
        assert isinstance(vae, LatentAutoencoder)
        size = int(vae.vae.config.sample_size)
    channels = 3 if vae.in_channels == 3 else 1
    x_c = image_tensor(img_c, size=size, channels=channels).to(args.device)
    x_b = image_tensor(img_b, size=size, channels=channels).to(args.device)
    t0 = time.time()
    res = craft_disguises(vae, x_b, x_c, cfg, progress=True, generator=torch_generator(args.seed, "disguise/init"))
    seconds = time.time() - t0
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
        "seed": args.seed,
        "seconds": seconds,
        "metrics": metrics,
        "detector_scores": det,
        "files": {k: str(out / f"{k}.png") for k in ("disguise", "reveal", "grid")},
    }
    write_json(out / "metrics.json", record)
    for k in ("latent_dist", "latent_dist_base", "latent_dist_rel", "ssim_base", "lpips_base", "linf_base", "ssim_copyright",
              "reveal_ssim_copyright", "recon_ssim_copyright"):
        print(f"{k:>24s}: {metrics[k]:.4f}")
    print(f"wrote {out}/disguise.png, reveal.png, grid.png, metrics.json")
    return 0


@dataclass(frozen=True)
class VaeGeometry:
    """What the size check needs of a VAE, known before it is loaded or trained: its default image
    size and its spatial downsampling factor f (the image side must be a multiple of f)."""

    sample_size: int
    downsampling: int
    source: str


def vae_geometry(spec: str) -> VaeGeometry:
    """The geometry of ``--vae``: from the tiny preset, or from a local directory's ``config.json``
    (or ``vae/config.json``). Raises ConfigError / DataError for a spec that cannot be a VAE."""
    from ..generative.vae import VAE_PRESETS, parse_tiny_spec, require_diffusers, vae_spec_error

    if spec == "taef2":
        from ..generative.taef2 import DOWNSAMPLING, TAEF2_SAMPLE_SIZE
        from ..models.pretrained.taef2 import weight_dir

        return VaeGeometry(TAEF2_SAMPLE_SIZE, DOWNSAMPLING, f"taef2 in {weight_dir()}")  # raises when the weights are missing
    require_diffusers()
    if spec.startswith("tiny:"):
        dataset, preset = parse_tiny_spec(spec)
        _check_dataset_name(dataset)
        arch = VAE_PRESETS.get(preset).arch
        return VaeGeometry(int(arch.sample_size), int(arch.downsampling), f"preset {preset!r}")
    p = Path(spec).expanduser()
    if not p.exists():
        raise vae_spec_error(spec)
    cfg_path = next((c for c in (p / "config.json", p / "vae" / "config.json") if c.is_file()), None)
    if cfg_path is None:
        raise DataError(f"{p}: no AutoencoderKL here (expected {p}/config.json or {p}/vae/config.json)")
    try:
        config = json.loads(cfg_path.read_text())
        blocks = config.get("block_out_channels") or [0]
        return VaeGeometry(int(config.get("sample_size") or 0), 2 ** (len(blocks) - 1), str(cfg_path))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{cfg_path}: cannot read the VAE's config ({exc})") from None


def check_size(size: int | None, geometry: VaeGeometry) -> int | None:
    """``--size`` (or the VAE's default size when None) checked against the VAE: a positive multiple
    of its downsampling factor, at least the SSIM window. Returns ``size`` unchanged."""
    f = geometry.downsampling
    side = size if size is not None else geometry.sample_size
    what = f"--size {size}" if size is not None else f"the VAE's image size {side} ({geometry.source}; set --size)"
    if size is not None and size <= 0:
        raise ConfigError(f"--size must be positive, got {size}")
    if side and (side % f or side < MIN_SIZE):
        raise ConfigError(f"{what}: the image side must be a multiple of the VAE's downsampling factor {f} "
                          f"and at least {MIN_SIZE} pixels")
    return size


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be cpu or cuda, got {device!r}")


def _check_dataset_name(dataset: str) -> None:
    """The tiny VAE's training set: a registered dataset name or an existing ``.npz`` file."""
    from ..data import DATASETS
    from ..errors import UnknownNameError

    if dataset.endswith(".npz"):
        if not Path(dataset).expanduser().is_file():
            raise DataError(f"--vae tiny:{dataset}: dataset file {dataset} does not exist")
    elif dataset not in DATASETS:
        raise UnknownNameError(f"--vae tiny:{dataset}: unknown dataset {dataset!r}; give a path to a .npz file or "
                               f"one of: {', '.join(DATASETS.names())}")
