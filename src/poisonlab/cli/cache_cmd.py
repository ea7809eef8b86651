"""``poisonlab cache ls|clear``: the content-addressed cache of trained models."""

from __future__ import annotations

import argparse
import time

from ..cache import ArtifactCache
from ..reporting.tables import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="list or clear cached trained models (clean victims, ...)")
    p.add_argument("action", choices=("ls", "clear"))
    p.add_argument("--cache-dir", help="cache directory (default $POISONLAB_CACHE or ~/.cache/poisonlab/artifacts)")
    p.add_argument("--kind", help="only this kind of entry (e.g. victim_clean)")
    p.set_defaults(handler=run)


def _summary(key: dict) -> str:
    keep = ("dataset", "model", "seed", "recipe", "model_options")
    return " ".join(f"{k}={key[k]}" for k in keep if k in key and key[k] not in ({}, None))


def run(args: argparse.Namespace) -> int:
    cache = ArtifactCache(args.cache_dir)
    if args.action == "clear":
        n = cache.clear(args.kind)
        print(f"removed {n} cache entr{'y' if n == 1 else 'ies'} from {cache.root}")
        return 0
    entries = cache.entries(args.kind)
    print(f"cache {cache.root}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
          f"{sum(e.size for e in entries) / 1e6:.2f} MB")
    if entries:
        rows = [(e.kind, e.digest, f"{e.size / 1e3:.1f} kB", time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)),
                 _summary(e.key)) for e in entries]
        print(format_table(("kind", "key", "size", "created", "config"), rows))
    return 0
