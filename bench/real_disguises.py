"""Disguised copyright infringement (thesis chapter 5) against a *real* pretrained latent encoder:
taef2, a tiny autoencoder distilled to reproduce the FLUX.2 VAE's latents (32 channels, f = 8:
256x256 -> 32x32x32). It is a FLUX.2-latent encoder, not Stable Diffusion's VAE (4 channels, 48x
compression), which could not be had offline.

1. real photographs at 256x256 (short side resized, centre crop): scikit-learn's two and the ones
   scikit-image's wheel bundles (:mod:`poisonlab.generative.photos`);
2. fixed (copyrighted x_c, base x_b) pairs: (astronaut, china), (chelsea, flower),
   (coffee, motorcycle_left) — ``--pairs`` takes the first N;
3. the four variants of :mod:`poisonlab.generative.disguise` (unbounded, bounded L∞ 32/255, flip,
   evasive) crafted against taef2 unchanged, with their metrics (SSIM and L∞ to the base, latent
   ratio ‖E(x_d) − E(x_c)‖ / ‖E(x_b) − E(x_c)‖, reveal SSIM D(E(x_d)) vs x_c);
4. both detectors of :mod:`poisonlab.generative.detect` (latent screening against the protected
   works, encoder-decoder examination by SSIM and by the LPIPS-style distance) against clean
   photographs — every photograph except the copyrighted ones, at 256x256 and as native-resolution
   256x256 crops — ROC-AUC and false-positive rates, per variant (the evasive one included);
5. a picture grid base / disguise / reveal / copyrighted per variant, and a JSON record.

    OMP_NUM_THREADS=1 POISONLAB_DATA=... python bench/real_disguises.py [--quick]

Writes bench/results/real_disguises.json and real_disguises.png (``--quick``: *_quick.*).
``--alphas 0.1,0.3,... --seeds 0,1,2 --init-noise A --pairs 5 --size 128 --tag sweep128`` instead
traces the α trade-off of one ``--variant`` (real_disguises_<tag>.json, extended when re-run with
the same settings, and the plot real_disguises_tradeoff.png of every sweep record).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import torch  # noqa: E402

from poisonlab.generative.images import image_grid  # noqa: E402
from poisonlab.generative.detect import detection_report, latent_screening_scores, reconstruction_scores  # noqa: E402
from poisonlab.generative.disguise import craft_disguises, summarize, variant_config  # noqa: E402
from poisonlab.generative.metrics import ssim  # noqa: E402
from poisonlab.generative.photos import all_photos, crops, square  # noqa: E402
from poisonlab.generative.taef2 import load_taef2_autoencoder  # noqa: E402
from poisonlab.models.pretrained import taef2 as taef2_weights  # noqa: E402
from poisonlab.seeding import torch_generator  # noqa: E402

PAIRS = (("astronaut", "china"), ("chelsea", "flower"), ("coffee", "motorcycle_left"))
#: the α sweep's pairs: the three above and two more with grey bases (every bundled colour photograph
#: that is a scene or an object is used once; the grey ones are repeated to RGB)
SWEEP_PAIRS = PAIRS + (("rocket", "clock"), ("retina", "camera"))
VARIANTS = ("unbounded", "bounded", "flip", "evasive")
#: the goal of issue #17: looks like its base and carries the copyrighted latent
GOAL_SSIM, GOAL_RATIO = 0.9, 0.3


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="check the script: 1 pair, 2 steps, 64x64, few clean images")
    ap.add_argument("--pairs", type=int, default=len(PAIRS))
    ap.add_argument("--steps", type=int, default=100, help="disguise optimisation steps (Adam)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--alpha", type=float, default=1.0, help="α of the four variants")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--crops-per-photo", type=int, default=4, help="native-resolution clean crops per photograph (at most)")
    ap.add_argument("--alphas", help="α sweep instead of the four-variant study: comma-separated α values, one "
                    "--variant, --seeds, the SWEEP_PAIRS (first --pairs of them), no detectors; writes "
                    "real_disguises_<tag>.json and redraws real_disguises_tradeoff.png from every sweep record")
    ap.add_argument("--variant", default="unbounded", help="the α sweep's variant (default unbounded)")
    ap.add_argument("--seeds", default="0", help="α sweep: comma-separated seeds; each draws the --init-noise start")
    ap.add_argument("--init-noise", type=float, default=0.0, help="α sweep: uniform start noise around the base (pixel scale)")
    ap.add_argument("--tag", default="sweep", help="α sweep: the record is real_disguises_<tag>.json")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.steps, args.size, args.crops_per_photo = 1, 2, 64, 1
    torch.set_num_threads(1)
    t_start = time.time()

    vae = load_taef2_autoencoder()
    photos = all_photos()
    if args.alphas:
        return alpha_sweep(args, vae, photos, t_start)
    pairs = PAIRS[: args.pairs]
    x_c = torch.stack([square(photos[c], args.size) for c, _ in pairs])
    x_b = torch.stack([square(photos[b], args.size) for _, b in pairs])
    protected_names = {c for c, _ in PAIRS}
    clean_list, clean_names = [], []
    for name, img in photos.items():
        if name in protected_names:
            continue  # copies of a protected work are not "clean" for latent screening
        clean_list.append(square(img, args.size))
        clean_names.append(f"{name}@square")
        for k, c in enumerate(crops(img, args.size, args.crops_per_photo)):
            clean_list.append(c)
            clean_names.append(f"{name}@crop{k}")
    x_clean = torch.stack(clean_list)
    print(f"{len(pairs)} pairs, {len(x_clean)} clean photographs ({args.size}x{args.size})", flush=True)

    with torch.no_grad():
        rec_clean = torch.cat([vae.reveal(x_clean[i:i + 8]) for i in range(0, len(x_clean), 8)])
        z_c = vae.encode(x_c)
    taef2_info = {
        **taef2_weights.info(),
        "latent_shape": list(z_c.shape[1:]),
        "compression_ratio": x_c[0].numel() / z_c[0].numel(),
        "scaling_factor": vae.scaling_factor,
        "clean_reconstruction_psnr_mean": float(psnr(rec_clean, x_clean).mean()),
        "clean_reconstruction_ssim_mean": float(ssim(rec_clean, x_clean).mean()),
    }
    print(f"taef2 on clean photographs: PSNR {taef2_info['clean_reconstruction_psnr_mean']:.2f} dB, "
          f"SSIM {taef2_info['clean_reconstruction_ssim_mean']:.3f}", flush=True)

    results, crafted = {}, {}
    for name in VARIANTS:
        cfg = variant_config(name, alpha=args.alpha, steps=args.steps, lr=args.lr)
        t0 = time.time()
        res = craft_disguises(vae, x_b, x_c, cfg, progress=False)
        crafted[name] = res
        results[name] = {"config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "seconds": time.time() - t0,
                         "metrics": summarize(res.metrics),
                         "per_pair": {k: [round(float(v), 4) for v in t] for k, t in res.metrics.items()},
                         "loss_first_last": [res.history[0], res.history[-1]]}
        m = results[name]["metrics"]
        print(f"{name:>10s}: latent ratio {m['latent_dist_rel']:.3f} (per pair {results[name]['per_pair']['latent_dist_rel']}), "
              f"SSIM to base {m['ssim_base']:.3f} ({results[name]['per_pair']['ssim_base']}), L-inf {m['linf_base']:.3f}, "
              f"reveal SSIM to x_c {m['reveal_ssim_copyright']:.3f} (ceiling {m['recon_ssim_copyright']:.3f}), "
              f"{results[name]['seconds']:.0f}s", flush=True)

    # ------------------------------------------------------------------ detection
    def scores(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"latent_screening": latent_screening_scores(vae, x, x_c, batch=8),
                "reconstruction_ssim": reconstruction_scores(vae, x, batch=8),
                "reconstruction_lpips": reconstruction_scores(vae, x, metric="lpips", batch=8)}

    t0 = time.time()
    clean_scores = scores(x_clean)
    detection = {}
    for name, res in crafted.items():
        pois = scores(res.disguise)
        detection[name] = {d: {**detection_report(clean_scores[d], pois[d]),
                               "poison_scores": [round(float(v), 4) for v in pois[d]]} for d in pois}
        print(f"{name:>10s}: " + ", ".join(f"{d} AUC {r['auc']:.3f} FPR@95%TPR {r['fpr_at_tpr']:.3f} FPR@100%TPR {r['fpr_at_tpr1']:.3f}"
                                           for d, r in detection[name].items()), flush=True)
    base_scores = scores(x_b)
    detection_bases = {d: detection_report(clean_scores[d], base_scores[d]) for d in base_scores}
    print("clean bases as 'poisons' (sanity): " + ", ".join(f"{d} AUC {r['auc']:.3f}" for d, r in detection_bases.items()))
    detection_seconds = time.time() - t0

    # ------------------------------------------------------------------ verdict per pair
    looks_and_carries = {name: [bool(s >= 0.9 and r <= 0.3) for s, r in zip(results[name]["per_pair"]["ssim_base"],
                                                                             results[name]["per_pair"]["latent_dist_rel"])]
                         for name in VARIANTS}

    # ------------------------------------------------------------------ picture + record
    suffix = "_quick" if args.quick else ""
    rows, caps = [("base x_b", x_b)], [[b for _, b in pairs]]
    for name in VARIANTS:
        res = crafted[name]
        rows += [(f"{name} x_d", res.disguise), (f"{name} D(E(x_d))", res.reveal)]
        caps += [[f"SSIM→b {s:.2f}, L∞ {l:.2f}" for s, l in zip(res.metrics["ssim_base"], res.metrics["linf_base"])],
                 [f"lat {r:.2f}, SSIM→c {v:.2f}" for r, v in zip(res.metrics["latent_dist_rel"], res.metrics["reveal_ssim_copyright"])]]
    with torch.no_grad():
        rows += [("copyrighted x_c", x_c), ("D(E(x_c))", vae.reveal(x_c))]
    caps += [[c for c, _ in pairs], None]
    png = image_grid(common.RESULTS / f"real_disguises{suffix}.png", rows, caps,
               title=f"disguises vs taef2 (FLUX.2 latent space, real weights), {args.size}x{args.size}, α={args.alpha}, "
                     f"{args.steps} steps\nlat = ‖E(x_d)−E(x_c)‖ / ‖E(x_b)−E(x_c)‖", cell=2.2)
    record = {
        "encoder": taef2_info,
        "settings": vars(args),
        "pairs": [list(p) for p in pairs],
        "clean_photographs": clean_names,
        "variants": results,
        "detection": detection,
        "detection_on_clean_bases": detection_bases,
        "detection_seconds": detection_seconds,
        "looks_like_base_and_carries_latent": {"rule": "SSIM(x_d, x_b) >= 0.9 and latent ratio <= 0.3, per pair",
                                               **looks_and_carries},
        "png": str(png),
        "total_seconds": time.time() - t_start,
        "note": "taef2 reproduces FLUX.2's VAE latents; it is not Stable Diffusion's VAE. Timings on a shared CPU, one thread.",
    }
    common.save(f"real_disguises{suffix}", record)
    print(f"total {record['total_seconds']:.0f}s")
    return 0


def alpha_sweep(args, vae, photos, t_start: float) -> int:
    """The trade-off SSIM-to-base vs latent ratio along α, for one variant, over seeds and pairs.

    Every (α, seed) crafts all pairs at once (the problems are independent); the record is written
    after each α, so an interrupted sweep keeps what it measured. Per point: the per-pair metrics,
    whether each pair meets the goal, and the whole objective history (to judge convergence).
    """
    alphas = [float(a) for a in args.alphas.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    pairs = SWEEP_PAIRS[: args.pairs]
    x_c = torch.stack([square(photos[c], args.size) for c, _ in pairs])
    x_b = torch.stack([square(photos[b], args.size) for _, b in pairs])
    name = f"real_disguises_{args.tag}{'_quick' if args.quick else ''}"
    points: list[dict] = []
    # an existing record with the same settings is extended: its (α, seed) points are kept, not re-run
    same = ("size", "steps", "lr", "variant", "init_noise", "pairs")
    old = common.RESULTS / f"{name}.json"
    if old.is_file():
        import json

        prev = json.loads(old.read_text())
        if all(prev["settings"].get(k) == getattr(args, k) for k in same):
            points = prev["points"]
            print(f"extending {old} ({len(points)} points)", flush=True)
    prev_commands = prev.get("commands", []) if points else []
    done = {(p["alpha"], p["seed"]) for p in points}
    keys = ("ssim_base", "latent_dist_rel", "ms_ssim_base", "linf_base", "reveal_ssim_copyright", "latent_dist")
    for alpha in alphas:
        for seed in seeds:
            if (alpha, seed) in done:
                continue
            cfg = variant_config(args.variant, alpha=alpha, steps=args.steps, lr=args.lr, init_noise=args.init_noise)
            t0 = time.time()
            res = craft_disguises(vae, x_b, x_c, cfg, generator=torch_generator(seed, "bench/real_disguises/init"))
            per_pair = {k: [round(float(v), 4) for v in res.metrics[k]] for k in keys}
            meets = [bool(s >= GOAL_SSIM and r <= GOAL_RATIO) for s, r in zip(per_pair["ssim_base"], per_pair["latent_dist_rel"])]
            h = res.history
            points.append({"alpha": alpha, "seed": seed, "seconds": time.time() - t0, "per_pair": per_pair, "meets_goal": meets,
                           "mean": {k: float(sum(v) / len(v)) for k, v in per_pair.items()}, "history": [round(v, 5) for v in h]})
            tail = (h[-max(2, len(h) // 5)] - h[-1]) / max(abs(h[0] - h[-1]), 1e-12)
            print(f"α {alpha:g} seed {seed}: SSIM to base {points[-1]['mean']['ssim_base']:.3f} {per_pair['ssim_base']}, "
                  f"latent ratio {points[-1]['mean']['latent_dist_rel']:.3f} {per_pair['latent_dist_rel']}, "
                  f"objective {h[0]:.3f} -> {h[-1]:.3f} (last 20 % of steps: {100 * tail:.1f} % of the decrease), "
                  f"{points[-1]['seconds']:.0f}s", flush=True)
        summary = {}
        for a in sorted({p["alpha"] for p in points}):
            at = [p for p in points if p["alpha"] == a]
            s = torch.tensor([p["mean"]["ssim_base"] for p in at])
            r = torch.tensor([p["mean"]["latent_dist_rel"] for p in at])
            summary[str(a)] = {"ssim_base_mean": float(s.mean()), "ssim_base_seed_std": float(s.std()) if len(s) > 1 else None,
                               "latent_ratio_mean": float(r.mean()), "latent_ratio_seed_std": float(r.std()) if len(r) > 1 else None,
                               "pairs_meeting_goal": sum(sum(p["meets_goal"]) for p in at), "cells": len(at) * len(pairs)}
        record = {
            "encoder": {"name": "taef2", "latent_space": "FLUX.2 VAE (32 channels, f = 8); not Stable Diffusion's VAE",
                        "scaling_factor": vae.scaling_factor},
            "settings": vars(args), "variant": args.variant, "pairs": [list(p) for p in pairs],
            "seeds": sorted({p["seed"] for p in points}), "commands": [*prev_commands, common.environment()["command"]],
            "goal": {"rule": f"SSIM(x_d, x_b) >= {GOAL_SSIM} and latent ratio <= {GOAL_RATIO}, per pair and seed",
                     "met_anywhere": any(any(p["meets_goal"]) for p in points)},
            "summary_by_alpha": summary, "points": points, "total_seconds": time.time() - t_start,
            "note": "seed draws the uniform start noise (init_noise); timings on a shared CPU, one thread.",
        }
        common.save(name, record)
    if not args.quick:
        png = tradeoff_plot()
        print(f"wrote {png}")
    print(f"goal met anywhere: {record['goal']['met_anywhere']}; total {record['total_seconds']:.0f}s")
    return 0


def tradeoff_plot() -> Path:
    """real_disguises_tradeoff.png from every α-sweep record in bench/results: SSIM to base vs latent
    ratio, one point per α (mean over pairs and seeds; bars: std over seeds), the pairs faint, the
    goal region shaded."""
    import json

    from poisonlab.figures import new_figure, save_figure

    fig, ax = new_figure(figsize=(6.4, 4.6))
    ax.fill_between([0, GOAL_RATIO], GOAL_SSIM, 1.0, color="tab:green", alpha=0.18, label=f"goal: SSIM ≥ {GOAL_SSIM}, ratio ≤ {GOAL_RATIO}")
    markers = iter("os^Dv")
    for path in sorted(common.RESULTS.glob("real_disguises_sweep*.json")):
        if path.stem.endswith("_quick"):
            continue
        rec = json.loads(path.read_text())
        st = rec["settings"]
        mk = next(markers, "o")
        label = (f"{rec['variant']}, {st['size']}², {st['steps']} steps, {len(rec['pairs'])} pairs, "
                 f"{len(rec['points'])} (α, seed) runs, seeds {','.join(map(str, rec['seeds']))}")
        alphas = sorted({p["alpha"] for p in rec["points"]})
        xs, ys, ex, ey = [], [], [], []
        for a in alphas:
            s = rec["summary_by_alpha"][str(a)]
            xs.append(s["latent_ratio_mean"])
            ys.append(s["ssim_base_mean"])
            ex.append(s["latent_ratio_seed_std"] or 0.0)
            ey.append(s["ssim_base_seed_std"] or 0.0)
            for p in rec["points"]:
                if p["alpha"] == a:
                    ax.scatter(p["per_pair"]["latent_dist_rel"], p["per_pair"]["ssim_base"], s=6, alpha=0.25, color="grey", marker=mk)
        ax.errorbar(xs, ys, xerr=ex, yerr=ey, marker=mk, ms=5, capsize=2, lw=1, label=label)
        for x, y, a in zip(xs, ys, alphas):
            ax.annotate(f"α={a:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("latent ratio ‖E(x_d) − E(x_c)‖ / ‖E(x_b) − E(x_c)‖ (lower: carries x_c)")
    ax.set_ylabel("SSIM(x_d, x_b) (higher: looks like the base)")
    ax.set_title("disguises vs taef2 (FLUX.2 latent space): the α trade-off\n(mean over pairs and seeds; grey: single pairs)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, common.RESULTS / "real_disguises_tradeoff.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
