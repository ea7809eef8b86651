"""Disguised copyright infringement (thesis chapter 5) end to end on real images:

1. a local AutoencoderKL trained on CIFAR-10 and cached (``poisonlab vae --preset sd``: the
   Stable-Diffusion-like f = 8, 4-channel VAE, 32x32 -> 4x4x4, 48x compression; ``--vae
   tiny:cifar10`` for the 12x ``small`` preset) or ``--vae DIR`` (a real SD VAE / pipeline folder);
2. fixed (copyrighted, base) pairs from CIFAR-10 test images: x_c = first image of class i mod 10,
   x_b = second image of class (i + 5) mod 10 (so no base is another pair's copyrighted image);
3. disguises for every variant (+ an α sweep for ``unbounded``: the trade-off between looking like
   the base and carrying the copyrighted latent) with their metrics;
4. both detectors against clean CIFAR-10 test images: ROC-AUC, FPR at 95 % / 100 % TPR;
5. generation: a tiny class-conditional latent diffusion model trained on clean latents (concepts
   = the 10 classes) plus one new concept per pair whose only training image is (A) the disguise,
   (B) the base image (no disguise), (C) the copyrighted image itself (direct access); samples of
   each new concept are compared with x_c;
6. PNG grids: base / disguise / reveal / copyrighted per variant, generations per case
   (disguises.png); base / disguise / reveal per α (disguises_alpha.png).

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/disguises.py [--quick]

Writes bench/results/disguises.json, disguises.png and disguises_alpha.png (``--quick``: *_quick.*).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402

from poisonlab.data import load_dataset  # noqa: E402
from poisonlab.generative.detect import detection_report, latent_screening_scores, reconstruction_scores  # noqa: E402
from poisonlab.generative.disguise import craft_disguises, summarize, variant_config  # noqa: E402
from poisonlab.generative.images import image_grid  # noqa: E402
from poisonlab.generative.latent_model import (  # noqa: E402
    ConditionalLatentDiffusion,
    LatentDiffusionConfig,
    LatentTrainConfig,
    encode_scaled,
    reproduction_metrics,
    train_latent_model,
)
from poisonlab.generative.vae import get_vae  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402


def pairs(test, n: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(test.y.tolist()):
        if len(by_class.setdefault(y, [])) < 2:
            by_class[y].append(i)
    idx = [(by_class[c % 10][0], by_class[(c + 5) % 10][1]) for c in range(n)]
    return test.x[[a for a, _ in idx]], test.x[[b for _, b in idx]], idx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny setting to check the script (seconds to a minute)")
    ap.add_argument("--vae", default="tiny:cifar10:sd", help="tiny:cifar10[:small|sd] or a local AutoencoderKL / SD directory")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=200, help="disguise optimisation steps")
    ap.add_argument("--alpha", type=float, default=1.0, help="α of the four variants")
    ap.add_argument("--alphas", default="0.3,3,10", help="extra α values for the unbounded variant (comma-separated)")
    ap.add_argument("--clean", type=int, default=500, help="clean test images for detection")
    ap.add_argument("--ldm-steps", type=int, default=1200, help="latent diffusion training steps per case")
    ap.add_argument("--ldm-clean", type=int, default=300, help="clean training images for the latent model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.steps, args.clean, args.ldm_steps, args.ldm_clean = 2, 10, 40, 20, 40

    t_start = time.time()
    bundle = load_dataset("cifar10")
    vae = get_vae(args.vae, seed=args.seed)
    x_c, x_b, idx = pairs(bundle.test, args.pairs)
    used = {i for p in idx for i in p}
    clean_idx = [i for i in range(len(bundle.test)) if i not in used][: args.clean]
    x_clean = bundle.test.x[clean_idx]

    runs = {name: variant_config(name, alpha=args.alpha, steps=args.steps) for name in ("unbounded", "bounded", "flip", "evasive")}
    sweep = [float(a) for a in args.alphas.split(",") if a.strip()]
    for a in sweep:
        runs[f"unbounded_alpha{a:g}"] = variant_config("unbounded", alpha=a, steps=args.steps)
    results, crafted = {}, {}
    for name, cfg in runs.items():
        t0 = time.time()
        res = craft_disguises(vae, x_b, x_c, cfg, progress=True)
        crafted[name] = res
        results[name] = {"config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "seconds": time.time() - t0,
                         "metrics": summarize(res.metrics),
                         "per_pair": {k: [round(float(v), 4) for v in t] for k, t in res.metrics.items()}}
        m = results[name]["metrics"]
        print(f"{name:>22s}: latent dist {m['latent_dist']:.3f} (base {m['latent_dist_base']:.3f}, ratio {m['latent_dist_rel']:.3f}), "
              f"SSIM to base {m['ssim_base']:.3f}, L-inf {m['linf_base']:.3f}, "
              f"LPIPS-style to base {m['lpips_base']:.3f}, SSIM to x_c {m['ssim_copyright']:.3f}, "
              f"reveal SSIM to x_c {m['reveal_ssim_copyright']:.3f} (VAE ceiling {m['recon_ssim_copyright']:.3f}), {results[name]['seconds']:.0f}s")

    # ---------------------------------------------------------------- detection
    clean_scores = {
        "latent_screening": latent_screening_scores(vae, x_clean, x_c),
        "reconstruction_ssim": reconstruction_scores(vae, x_clean),
        "reconstruction_lpips": reconstruction_scores(vae, x_clean, metric="lpips"),
    }
    detection = {}
    for name, res in crafted.items():
        pois = {
            "latent_screening": latent_screening_scores(vae, res.disguise, x_c),
            "reconstruction_ssim": reconstruction_scores(vae, res.disguise),
            "reconstruction_lpips": reconstruction_scores(vae, res.disguise, metric="lpips"),
        }
        detection[name] = {d: detection_report(clean_scores[d], pois[d]) for d in pois}
        print(f"{name:>22s}: " + ", ".join(f"{d} AUC {r['auc']:.3f} FPR@95 {r['fpr_at_tpr']:.3f}" for d, r in detection[name].items()))
    # also: clean base images are not flagged more than other clean images (sanity)
    clean_recon_ssim = float((1.0 - clean_scores["reconstruction_ssim"]).double().mean())
    base_rep = {d: detection_report(clean_scores[d], f(x_b)) for d, f in {
        "latent_screening": lambda t: latent_screening_scores(vae, t, x_c),
        "reconstruction_ssim": lambda t: reconstruction_scores(vae, t)}.items()}

    # ---------------------------------------------------------------- generation
    tr = bundle.train
    g = torch_generator(args.seed, "bench/ldm_clean")
    sel = torch.randperm(len(tr), generator=g)[: args.ldm_clean]
    z_clean = encode_scaled(vae, tr.x[sel])
    y_clean = tr.y[sel]
    n = args.pairs
    concepts = torch.arange(10, 10 + n)
    cases = {"A_disguises": crafted["unbounded"].disguise, "B_bases_no_disguise": x_b, "C_copyrighted_direct": x_c}
    generation, gen_images = {}, {}
    ldm_cfg = LatentDiffusionConfig(block_out_channels=(32, 64), norm_num_groups=16, num_train_timesteps=200)
    for case, imgs in cases.items():
        t0 = time.time()
        reps = max(1, args.ldm_clean // (10 * n))  # the new concept is as frequent as a class
        z = torch.cat([z_clean, encode_scaled(vae, imgs).repeat(reps, 1, 1, 1)])
        y = torch.cat([y_clean, concepts.repeat(reps)])
        model = ConditionalLatentDiffusion(tuple(z.shape[1:]), 10 + n, ldm_cfg, seed=args.seed)
        losses = train_latent_model(model, z, y, LatentTrainConfig(steps=args.ldm_steps, batch_size=64, lr=1e-3),
                                    torch_generator(args.seed, f"bench/ldm/{case}"), progress=True)
        per, samples = [], []
        gs = torch_generator(args.seed, f"bench/ldm_sample/{case}")
        for k in range(n):
            zs = model.sample(10 + k, 4, gs, steps=50)
            per.append(reproduction_metrics(vae, zs, x_c[k : k + 1]))
            per[-1]["ssim_to_base_mean"] = float(reproduction_metrics(vae, zs, x_b[k : k + 1])["ssim_mean"])
            with torch.no_grad():
                samples.append(vae.decode(zs[:1] / vae.scaling_factor))
        gen_images[case] = torch.cat(samples)
        generation[case] = {
            "ssim_to_copyrighted_mean": sum(p["ssim_mean"] for p in per) / n,
            "ssim_to_copyrighted_max": sum(p["ssim_max"] for p in per) / n,
            "latent_dist_to_copyrighted_min": sum(p["latent_dist_min"] for p in per) / n,
            "ssim_to_base_mean": sum(p["ssim_to_base_mean"] for p in per) / n,
            "final_loss_mean_last100": sum(losses[-100:]) / max(1, len(losses[-100:])),
            "seconds": time.time() - t0,
            "per_pair": per,
        }
        r = generation[case]
        print(f"{case:>22s}: samples' SSIM to x_c {r['ssim_to_copyrighted_mean']:.3f} (max {r['ssim_to_copyrighted_max']:.3f}), "
              f"latent dist {r['latent_dist_to_copyrighted_min']:.3f}, SSIM to base {r['ssim_to_base_mean']:.3f}, {r['seconds']:.0f}s")

    # ---------------------------------------------------------------- pictures + record
    suffix = "_quick" if args.quick else ""
    rows, caps = [("base x_b", x_b)], [None]
    for name in ("unbounded", "bounded", "flip", "evasive"):
        res = crafted[name]
        rows += [(f"{name} x_d", res.disguise), (f"{name} D(E(x_d))", res.reveal)]
        caps += [[f"SSIM→b {v:.2f}" for v in res.metrics["ssim_base"]], [f"SSIM→c {v:.2f}" for v in res.metrics["reveal_ssim_copyright"]]]
    with torch.no_grad():
        rows += [("copyrighted x_c", x_c), ("D(E(x_c))", vae.reveal(x_c))]
    caps += [None, None]
    for case, imgs in gen_images.items():
        rows.append((f"gen {case.split('_')[0]}", imgs))
        caps.append(None)
    png = image_grid(common.RESULTS / f"disguises{suffix}.png", rows, caps,
                     title=f"disguises vs {vae.source}\nα={args.alpha}, {args.steps} steps\ngen A: LDM trained on disguises, "
                     "\nB: on bases, C: on x_c")
    rows, caps = [("base x_b", x_b)], [None]
    for a in sorted({args.alpha, *sweep}):
        res = crafted["unbounded" if a == args.alpha else f"unbounded_alpha{a:g}"]
        rows += [(f"α={a:g} x_d", res.disguise), (f"α={a:g} D(E(x_d))", res.reveal)]
        caps += [[f"SSIM→b {v:.2f}" for v in res.metrics["ssim_base"]],
                 [f"lat {v:.2f}, SSIM→c {u:.2f}" for v, u in zip(res.metrics["latent_dist_rel"], res.metrics["reveal_ssim_copyright"])]]
    rows.append(("copyrighted x_c", x_c))
    caps.append(None)
    png_alpha = image_grid(common.RESULTS / f"disguises_alpha{suffix}.png", rows, caps,
                           title=f"unbounded disguises vs {vae.source}: α trade-off\n"
                           "lat = ‖E(x_d)−E(x_c)‖ / ‖E(x_b)−E(x_c)‖")
    record = {
        "vae": vae.source,
        "vae_info": {"latent_shape": list(z_clean.shape[1:]), "compression_ratio": x_c[0].numel() / z_clean[0].numel(),
                     "scaling_factor": vae.scaling_factor, "clean_test_reconstruction_ssim": clean_recon_ssim},
        "settings": vars(args),
        "pairs_test_index": idx,
        "variants": results,
        "detection": detection,
        "detection_on_clean_bases": base_rep,
        "generation": generation,
        "png": str(png),
        "png_alpha": str(png_alpha),
        "total_seconds": time.time() - t_start,
    }
    common.save(f"disguises{suffix}", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
