"""``poisonlab cache ls|clear``: the content-addressed artifacts (clean victims, targets, generators).

``clear`` deletes exactly the entries ``ls`` lists (all kinds, or those chosen with ``--kind``);
the other folders of the cache root (extractors, VAEs, converted pretrained weights, data; see
:mod:`poisonlab.paths`) are never touched.
"""

from __future__ import annotations

import argparse
import time

from ..cache import ARTIFACT_KINDS, ArtifactCache
from ..errors import ConfigError
from ..paths import STORE_KINDS, cache_root
from ..reporting.tables import format_table


def add_parser(sub) -> None:
    p = sub.add_parser("cache", help="list or clear cached artifacts (clean victims, targets, generators)")
    p.add_argument("action", choices=("ls", "clear"))
    p.add_argument("--cache-dir", help="artifact directory (default <cache root>/artifacts, the root being "
                                       "$POISONLAB_CACHE, else ~/.cache/poisonlab)")
    p.add_argument("--kind", action="append", metavar="KIND",
                   help=f"only this kind of entry (repeatable): {', '.join(ARTIFACT_KINDS)}, or any kind `ls` shows")
    p.set_defaults(handler=run)


def _summary(key: dict) -> str:
    keep = ("dataset", "model", "seed", "recipe", "model_options")
    return " ".join(f"{k}={key[k]}" for k in keep if k in key and key[k] not in ({}, None))


def _entries(n: int) -> str:
    return "entry" if n == 1 else "entries"


def run(args: argparse.Namespace) -> int:
    cache = ArtifactCache(args.cache_dir)
    kinds: list[str | None] = list(dict.fromkeys(args.kind)) if args.kind else [None]
    present = cache.kinds()
    unknown = [k for k in kinds if k is not None and k not in ARTIFACT_KINDS and k not in present]
    if unknown:
        raise ConfigError(f"unknown cache kind {unknown[0]!r}; kinds: {', '.join(sorted({*ARTIFACT_KINDS, *present}))}")
    if args.action == "clear":
        n = sum(cache.clear(k) for k in kinds)
        print(f"removed {n} cache {_entries(n)} from {cache.root}")
        return 0
    entries = sorted((e for k in kinds for e in cache.entries(k)), key=lambda e: e.created)
    print(f"cache {cache.root}: {len(entries)} {_entries(len(entries))}, {sum(e.size for e in entries) / 1e6:.2f} MB")
    if entries:
        rows = [(e.kind, e.digest, f"{e.size / 1e3:.1f} kB", time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)),
                 _summary(e.key)) for e in entries]
        print(format_table(("kind", "key", "size", "created", "config"), rows))
    if not args.cache_dir:
        print(_kept_line())
    return 0


def _kept_line() -> str:
    """The other folders of the cache root, which ``clear`` never touches."""
    root, parts = cache_root(), []
    for kind in STORE_KINDS:
        folder = root / kind
        if kind == "artifacts" or not folder.is_dir():
            continue
        files = [p for p in folder.rglob("*") if p.is_file()]
        parts.append(f"{kind}/ {len(files)} file{'' if len(files) == 1 else 's'}, {sum(p.stat().st_size for p in files) / 1e6:.2f} MB")
    return f"kept by `cache clear` under {root}: {'; '.join(parts) if parts else 'nothing else'}"
