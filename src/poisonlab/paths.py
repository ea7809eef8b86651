"""Where poisonlab keeps files: every environment variable the library reads, read here and nowhere else.

One meaning per variable:

- ``POISONLAB_CACHE``: the root of everything poisonlab stores (default ``$XDG_CACHE_HOME/poisonlab``,
  ``~/.cache/poisonlab`` when ``XDG_CACHE_HOME`` is unset). Its kinds, one folder each:
  ``artifacts/`` (clean victims, targets, generators: :mod:`poisonlab.cache`, what ``poisonlab
  cache ls|clear`` lists and deletes), ``extractors/`` (``poisonlab pretrain``), ``vae/``
  (``poisonlab vae``), ``pretrained/`` (converted pretrained weights) and ``data/`` (datasets,
  unless ``POISONLAB_DATA`` is set);
- ``XDG_CACHE_HOME``: only the default of ``POISONLAB_CACHE``;
- ``POISONLAB_DATA``: the dataset directory (default ``<cache root>/data``);
- ``POISONLAB_MODELS``: a directory of pretrained weight folders (``<dir>/<name>/``), searched first;
- ``POISONLAB_OFFLINE``: ``1`` / ``true`` / ``yes`` forbids downloading a dataset.

An explicit argument (``--cache-dir``, ``--data-dir``, ``data_dir=``) always wins over the
environment. Reading the environment on every call (nothing is frozen at import) lets a caller or a
test change a variable and be obeyed. Library code never guesses a development checkout's layout
(no folder beside the repository): data come from ``POISONLAB_DATA`` or an argument. The environment of the
*process* (thread policies) is the CLI's business, not this module's.
"""

from __future__ import annotations

import os
from pathlib import Path

#: every variable the library reads, with its one meaning (the table above, for ``--help`` texts and docs)
ENVIRONMENT: dict[str, str] = {
    "POISONLAB_CACHE": "root of everything poisonlab stores (artifacts/, extractors/, vae/, pretrained/, data/)",
    "XDG_CACHE_HOME": "default parent of the cache root ($XDG_CACHE_HOME/poisonlab)",
    "POISONLAB_DATA": "dataset directory (default <cache root>/data)",
    "POISONLAB_MODELS": "directory of pretrained weight folders <dir>/<name>/, searched first",
    "POISONLAB_OFFLINE": "1/true/yes: never download a dataset",
}

#: the folders of the cache root, one per kind of stored file; only ``artifacts`` is what ``cache clear`` deletes
STORE_KINDS = ("artifacts", "extractors", "vae", "pretrained", "data")


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def _given(path: str | os.PathLike | None) -> Path | None:
    return Path(path).expanduser() if path is not None and str(path) != "" else None


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$POISONLAB_CACHE``, else ``$XDG_CACHE_HOME/poisonlab`` (``~/.cache/poisonlab``)."""
    given = _given(root) or _env_path("POISONLAB_CACHE")
    if given is not None:
        return given
    xdg = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return xdg / "poisonlab"


def artifact_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The content-addressed artifacts (``--cache-dir`` when given, else ``<cache root>/artifacts``)."""
    return _given(cache_dir) or cache_root() / "artifacts"


def extractor_dir() -> Path:
    """Pre-trained feature extractors, ``<cache root>/extractors/<key>.safetensors``."""
    return cache_root() / "extractors"


def vae_dir() -> Path:
    """Trained latent autoencoders, ``<cache root>/vae/<key>/`` (diffusers layout)."""
    return cache_root() / "vae"


def pretrained_dir(root: str | os.PathLike | None = None) -> Path:
    """Converted pretrained weights, ``<cache root>/pretrained/`` (``root`` overrides the cache root)."""
    return cache_root(root) / "pretrained"


def data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir``, else ``$POISONLAB_DATA``, else ``<cache root>/data``."""
    return _given(data_dir) or _env_path("POISONLAB_DATA") or cache_root() / "data"


def models_dir() -> Path | None:
    """``$POISONLAB_MODELS`` (folders of pretrained weights, ``<dir>/<name>/``), or None when unset."""
    return _env_path("POISONLAB_MODELS")


def offline() -> bool:
    """True when ``$POISONLAB_OFFLINE`` forbids downloads (``1``, ``true`` or ``yes``)."""
    return os.environ.get("POISONLAB_OFFLINE", "").strip().lower() in ("1", "true", "yes")
