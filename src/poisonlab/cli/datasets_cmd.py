"""``poisonlab datasets``: list datasets and verify the local files (counts, checksums)."""

from __future__ import annotations

import argparse

from ..data import DATASETS, load_dataset
from ..data.files import FILE_DATASETS, locate
from ..errors import PoisonlabError
from ..paths import data_dir
from ..reporting.tables import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("datasets", help="list datasets and verify local files (counts, checksums)")
    p.add_argument("--data-dir", help="data directory to check (default $POISONLAB_DATA, else <cache root>/data)")
    p.add_argument("--download", action="store_true", help="download missing files (official sources, checksummed)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    root = data_dir(args.data_dir)
    print(f"data directory: {root}")
    rows, bad = [], 0
    for name in DATASETS:
        entry = DATASETS.get(name)
        if entry.needs_files and not args.download and locate(root, FILE_DATASETS[name]) is None:
            rows.append((name, "missing", "-", "-", "-", "run with --download or put the files there"))
            continue
        try:
            b = load_dataset(name, root)
        except PoisonlabError as exc:
            bad += 1
            rows.append((name, "ERROR", "-", "-", "-", str(exc)[:120]))
            continue
        where = "embedded" if not entry.needs_files else "checksum OK"
        rows.append((name, where, str(len(b.train)), str(len(b.test)), "x".join(map(str, b.train.x.shape[1:])), entry.description))
    print(format_table(("dataset", "status", "train", "test", "shape CxHxW", "notes"), rows))
    return 1 if bad else 0
