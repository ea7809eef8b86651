"""Clean accuracy with the thesis recipe (SGD lr 0.1, 100 epochs, batch 1000 MNIST / 256 CIFAR-10),
trained on D_tr (70 % of the training set) and tested on the official test set.

Thesis (§2.6): MNIST LR 92.35 %, NN 98.04 %, CNN 99.13 %; CIFAR-10 CNN 69.44 %, ResNet-18 94.95 %.

    python bench/clean_accuracy.py                      # MNIST lr, nn (100 epochs), cnn (--cnn-epochs)
    python bench/clean_accuracy.py --models lr --epochs 5   # quick check
    python bench/clean_accuracy.py --dataset cifar10 --models cnn,resnet18   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

from poisonlab.protocol import RunSpec, prepare
from poisonlab.training import accuracy

THESIS = {("mnist", "lr"): 92.35, ("mnist", "nn"): 98.04, ("mnist", "cnn"): 99.13,
          ("cifar10", "cnn"): 69.44, ("cifar10", "resnet18"): 94.95}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--models", default="lr,nn,cnn")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--cnn-epochs", type=int, default=None, help="epochs for cnn/resnet18 (CPU budget); default --epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    args = ap.parse_args()
    rows = []
    for model in args.models.split(","):
        epochs = args.cnn_epochs if (args.cnn_epochs is not None and model in ("cnn", "resnet18")) else args.epochs
        prep, spec = prepare(RunSpec(dataset=args.dataset, model=model, epochs=epochs, seed=args.seed, data_dir=args.data_dir))
        t0 = time.perf_counter()
        net = spec.train(prep.train, args.seed, progress=f"{model}")
        seconds = time.perf_counter() - t0
        acc = accuracy(net, prep.test)
        row = {"dataset": args.dataset, "model": model, "epochs": epochs, "batch_size": spec.recipe.batch_size,
               "lr": spec.recipe.lr, "n_train": len(prep.train), "test_accuracy": acc,
               "thesis_accuracy": THESIS.get((args.dataset, model)), "train_seconds": seconds,
               "seconds_per_epoch": seconds / max(epochs, 1)}
        rows.append(row)
        print(f"{args.dataset} {model:9s} epochs {epochs:3d}  acc {acc:6.2f} %  (thesis {row['thesis_accuracy']})  "
              f"{row['seconds_per_epoch']:.2f} s/epoch")
    common.save(f"clean_accuracy_{args.dataset}{args.tag}", {"rows": rows})


if __name__ == "__main__":
    main()
