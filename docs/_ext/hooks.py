"""MkDocs hooks: publish the benchmark figures where the study pages link them.

The study pages link the figures the benchmarks write, ``bench/results/*.png``, with paths
relative to the repository (``../../bench/results/x.png`` from ``docs/studies/``), so the same
Markdown works on a Git host and in the built site. Those files live outside ``docs/``; this hook
adds them to the site as ``bench/results/x.png`` under their repository-relative source path,
so MkDocs resolves (and ``--strict`` checks) the links without a copy of the figures in ``docs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel


def on_files(files: Files, config) -> Files:
    docs = Path(config["docs_dir"]).resolve()
    results = docs.parent / "bench" / "results"
    for png in sorted(results.glob("*.png")):
        rel = png.relative_to(docs.parent).as_posix()  # bench/results/x.png
        files.append(
            File(
                f"../{rel}",
                src_dir=str(docs),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
                dest_uri=rel,
                inclusion=InclusionLevel.INCLUDED,
            )
        )
    return files


_CODE = re.compile(r"<code>(.*?)</code>", re.S)


def on_page_content(html: str, **kwargs) -> str:
    r"""Tables in the README and the pages escape ``|`` inside code as ``\|`` (GitHub needs it);
    Python-Markdown keeps the backslash there, so drop it in the rendered code."""
    return _CODE.sub(lambda m: "<code>" + m.group(1).replace("\\|", "|") + "</code>", html)
