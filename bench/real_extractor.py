"""Poisoning a linear probe on a *real* pretrained backbone (thesis chapter 4): EfficientNet-Lite0
trained on ImageNet-1k (:mod:`poisonlab.models.pretrained.efficientnet`), frozen, on CIFAR-10.

1. features of all 50 000 + 10 000 CIFAR-10 images, upsampled 32 -> ``--resolution`` (default 64:
   what one shared CPU thread allows, ~10 min; 224 would take ~45 min), TFLite input scaling,
   computed once and cached as safetensors (:class:`poisonlab.cache.ArtifactCache`);
2. the linear probe = the protocol's ``lr`` victim (logistic regression, SGD) on the standardised
   1 280-d features (train statistics), through :func:`poisonlab.api.run`: D_tr is the protocol's
   70 % of the 50 000 training images (35 000), D_v the other 15 000, the 10 000 test images;
3. at ε = 3 % (1 050 poisons): ``label_flip`` (rule y <- 9 − y, and random) and the noise floor
   (unmodified copies of random D_tr points with their own labels, ``--floor-draws`` draws), per
   seed; *excess drop* = drop − that seed's floor.

The input-space attacks (gc, tgda, unlearnable, feature_targeted) need gradients through the
backbone for every poison at every step; on one CPU thread that is hours (see the docs page), so
they are not run here.

    OMP_NUM_THREADS=1 POISONLAB_DATA=... python bench/real_extractor.py [--quick]

Writes bench/results/real_extractor.json (``--quick``: real_extractor_quick.json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import poisonlab as pl  # noqa: E402
from poisonlab.attacks.base import Attack, AttackConfig  # noqa: E402
from poisonlab.cache import ArtifactCache  # noqa: E402
from poisonlab.data import PoisonSet, load_dataset  # noqa: E402
from poisonlab.models.pretrained import efficientnet as E  # noqa: E402
from poisonlab.storage import file_sha256  # noqa: E402


class CleanCopies(Attack[AttackConfig]):
    """The noise floor: copies of random D_tr points with their own labels (no attack at all)."""

    name = "clean_copies"
    summary = "unmodified copies of random D_tr points (noise floor)"

    def __init__(self, draw: int = 0) -> None:
        super().__init__()
        self.draw = draw

    def _craft(self, data, victim, n_poison, *, generator, progress, cache=None):
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) + 7919 * self.draw)
        src = torch.randperm(len(data.train), generator=g)[:n_poison]
        return PoisonSet(data.train.x[src].clone(), data.train.y[src].clone(), src)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 000 / 1 000 images at 32x32, 3 epochs, 1 seed")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10, help="probe epochs (SGD lr 0.1, batch 128)")
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("--floor-draws", type=int, default=2)
    ap.add_argument("--random-control", type=int, default=5000,
                    help="also probe a randomly initialised copy on this many training images (0: skip)")
    ap.add_argument("--cache-dir", default=None, help="ArtifactCache root (default $POISONLAB_CACHE or ~/.cache/poisonlab/artifacts)")
    args = ap.parse_args()
    if args.quick:
        args.resolution, args.seeds, args.epochs, args.floor_draws, args.random_control = 32, 1, 3, 1, 0
    torch.set_num_threads(1)
    t_start = time.time()
    cache = ArtifactCache(args.cache_dir)

    bundle = load_dataset("cifar10")
    xtr, ytr, xte, yte = bundle.train.x, bundle.train.y, bundle.test.x, bundle.test.y
    if args.quick:
        xtr, ytr, xte, yte = xtr[:2000], ytr[:2000], xte[:1000], yte[:1000]
    src = Path(common.os.environ["POISONLAB_DATA"]) / "cifar10.npz"
    data_key = f"cifar10.npz:{file_sha256(src)[:16]}"
    timings = {}

    def feats(x, split, pretrained=True):
        t0 = time.time()
        last = [0.0]

        def prog(done, total):
            if time.time() - last[0] > 60:
                last[0] = time.time()
                print(f"  features {split}: {done}/{total} ({time.time() - t0:.0f}s)", flush=True)

        f = E.extract_features(x, args.resolution, "tflite", batch_size=250, cache=cache, pretrained=pretrained,
                               dataset_key=f"{data_key}:{split}:{len(x)}", progress=prog)
        timings[f"features_{split}{'' if pretrained else '_random'}_seconds"] = time.time() - t0
        print(f"features {split} {tuple(f.shape)}: {time.time() - t0:.0f}s", flush=True)
        return f

    ftr, fte = feats(xtr, "train"), feats(xte, "test")
    mean, std = ftr.mean(0), ftr.std(0).clamp_min(1e-6)
    ftr_s, fte_s = (ftr - mean) / std, (fte - mean) / std
    data = pl.data_from_arrays(ftr_s, ytr, fte_s, yte, bounds=(-float("inf"), float("inf")), name=f"cifar10-effnetlite0-{args.resolution}")
    victim = pl.victim("lr", lr=0.1, epochs=args.epochs, batch_size=128, device="cpu")

    runs: dict[str, list[dict]] = {"label_flip_rule": [], "label_flip_random": [], "floor": []}
    for seed in range(args.seeds):
        for name, atk, opts in (("label_flip_rule", "label_flip", {"mode": "rule"}),
                                ("label_flip_random", "label_flip", {"mode": "random"})):
            t0 = time.time()
            r = pl.run(data, victim, atk, args.fraction, seed=seed, options=opts, cache=cache, progress=False)
            runs[name].append({"seed": seed, "clean_accuracy": r.clean_accuracy, "poisoned_accuracy": r.poisoned_accuracy,
                               "accuracy_drop": r.accuracy_drop, "n_poison": r.n_poison, "seconds": time.time() - t0})
            print(f"seed {seed} {name}: clean {r.clean_accuracy:.2f} poisoned {r.poisoned_accuracy:.2f} "
                  f"drop {r.accuracy_drop:.2f} ({r.n_poison} poisons, {time.time() - t0:.0f}s)", flush=True)
        drops = []
        for draw in range(args.floor_draws):
            t0 = time.time()
            r = pl.run(data, victim, CleanCopies(draw), args.fraction, seed=seed, cache=cache, progress=False)
            drops.append(r.accuracy_drop)
            print(f"seed {seed} floor draw {draw}: drop {r.accuracy_drop:.2f} ({time.time() - t0:.0f}s)", flush=True)
        runs["floor"].append({"seed": seed, "drops": drops, "mean_drop": float(np.mean(drops))})

    def summary(name: str) -> dict:
        d = np.array([r["accuracy_drop"] for r in runs[name]])
        floor = np.array([f["mean_drop"] for f in runs["floor"]])
        ex = d - floor
        return {"drop_mean": float(d.mean()), "drop_std": float(d.std(ddof=1)) if len(d) > 1 else None,
                "excess_drop_mean": float(ex.mean()), "excess_drop_std": float(ex.std(ddof=1)) if len(ex) > 1 else None,
                "excess_drops": ex.tolist()}

    clean = [r["clean_accuracy"] for r in runs["label_flip_rule"]]
    record = {"backbone": E.SOURCE, "resolution": args.resolution, "scaling": "tflite",
              "settings": vars(args), "n_train_images": len(xtr), "n_test_images": len(xte),
              "clean_accuracy_mean": float(np.mean(clean)), "runs": runs,
              "summary": {n: summary(n) for n in ("label_flip_rule", "label_flip_random")},
              "floor_mean": float(np.mean([f["mean_drop"] for f in runs["floor"]])), "timings": timings}

    if args.random_control:
        from sklearn.linear_model import LogisticRegression

        n = args.random_control
        t0 = time.time()
        rtr, rte = feats(xtr[:n], "train", pretrained=False), feats(xte, "test", pretrained=False)
        acc = {}
        for label, (a, b) in {"pretrained": (ftr[:n], fte), "random_init": (rtr, rte)}.items():
            m, s = a.mean(0), a.std(0).clamp_min(1e-6)
            clf = LogisticRegression(max_iter=1000, C=0.1).fit(((a - m) / s).numpy(), ytr[:n].numpy())
            acc[label] = float(clf.score(((b - m) / s).numpy(), yte.numpy()))
        record["random_control"] = {"n_train": n, "n_test": len(xte), "probe": "sklearn LogisticRegression C=0.1",
                                    "accuracy": acc, "seconds": time.time() - t0}
        print(f"random-init control ({n} train images, sklearn logistic regression): {acc}", flush=True)

    record["total_seconds"] = time.time() - t_start
    record["note"] = "wall times on a shared CPU, one thread"
    common.save("real_extractor_quick" if args.quick else "real_extractor", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
