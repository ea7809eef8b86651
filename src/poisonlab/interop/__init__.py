"""Bridges to other toolkits. Nothing here imports a foreign package at import time.

* :mod:`poisonlab.interop.art` — the Adversarial Robustness Toolbox (ART): any poisonlab attack as
  an ART poisoning attack (:class:`poisonlab.interop.art.PoisonlabAttack`; importing that module
  needs ART). ART's poison detectors are poisonlab defenses (``art_activation``, ``art_spectral``
  in :mod:`poisonlab.defenses.art_activation` and ``art_spectral``), registered whether or not ART is installed; they
  raise :class:`~poisonlab.errors.UnsupportedError` at construction when it is missing.

The helpers below (defined in :mod:`poisonlab.models.art`) are shared by both sides and import ART only
when called:

* :func:`require_art` — import ART or raise ``UnsupportedError`` with the install hint
* :func:`art_clip_values` — a poisonlab :class:`~poisonlab.data.bounds.Bounds` as ART ``clip_values``
* :func:`bounds_from_clip_values` — the reverse
* :func:`art_classifier` — an ``nn.Module`` wrapped in ART's ``PyTorchClassifier`` on its own device
"""

from ..models.art import ART_INSTALL_HINT, art_classifier, art_clip_values, bounds_from_clip_values, require_art

__all__ = ["ART_INSTALL_HINT", "art_classifier", "art_clip_values", "bounds_from_clip_values", "require_art"]
