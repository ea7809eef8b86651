"""ART's spectral signatures (Tran, Li & Madry 2018),
``art.defences.detector.poison.SpectralSignatureDefense``, as a poisonlab defense. Needs ART
(``pip install 'poisonlab[art]'``).

Threat model: the defender trains the victim on D and hands it to ART wrapped in a
``PyTorchClassifier`` (clip values from the data's bounds); ART reads the activations r_i of one
layer (by default the penultimate features, see :mod:`poisonlab.defenses._art`). Per class c, ART
takes the top right singular vector v_c of the class-centred matrix of representations, gives each
point the outlier score s_i = |v_cᵀ r_i| and flags the points of each class above the
(1 − ``eps_multiplier`` · ``expected_pp_poison``) quantile of the class's scores.

Centring. ART (1.20) projects the representation r_i itself, not r_i − r̄_c as in the paper's
Algorithm 1. When the class mean r̄_c has a large component along v_c — the usual case for
non-negative features or inputs in [0, 1] — |v_cᵀ r_i| orders the points along v_c from one side
only, and poisons that sit on the other side of the class get the *lowest* scores (on the defense
contract's planted outliers ART as shipped ranks them last). With ``centre=True`` (default) ART is
run once per class on the class-centred representation r_i − r̄_c (a shift added after the layer
ART reads): ART's singular vector is unchanged (it centres anyway), its score becomes the paper's
|v_cᵀ(r_i − r̄_c)| and its verdict the paper's. ``centre=False`` runs ART exactly as shipped.

Score. ART reports s_i only for the points it flags; here s_i is computed for every point with
ART's own ``spectral_signature_scores`` on the activations its detector reads (for the flagged
points these are the numbers ART reports), and

    score_i = s_i

as in poisonlab's ``spectral`` (which ranks by s_i²): the filter removes the
``poison_count(fraction, N)`` largest by global rank. ART's own verdict — the top
``eps_multiplier`` · ``expected_pp_poison`` of *every* class, poisoned or not — is not used for the
order (it would put clean points of unpoisoned classes first); its size is ``info["n_flagged"]``.
``expected_pp_poison`` defaults to the defense's ``fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.types import Dataset
from ..errors import ConfigError
from ..training.victim import Victim
from ..validation import check_bool, check_int, check_number
from ._art import ArtDefense, ArtDetectorConfig, ArtView, art_inputs, art_view, one_hot
from .base import register_defense


@dataclass(frozen=True, kw_only=True)
class ArtSpectralConfig(ArtDetectorConfig):
    """ART's options: ``expected_pp_poison`` (None: the defense's ``fraction``), ``eps_multiplier``,
    ``batch_size`` of ART's forward passes; ``centre`` (see the module docstring); ``layer`` as in
    :class:`ArtDetectorConfig`.

    Spectral signatures are due to Tran, Li & Madry 2018; these options are passed to ART's
    ``SpectralSignatureDefense``.

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points to remove (by global rank of the scores), in [0, 1]. Default 0.03.
        layer: As in :class:`~poisonlab.defenses._art.ArtDetectorConfig`: "penultimate" (default)
            or "art".
        expected_pp_poison: ART's expected poison fraction per class, in [0, 1], or None (default)
            for the defense's ``fraction``. Together with ``eps_multiplier`` it sets the size of
            ART's flagged set (``info["n_flagged"]``), not the scores or what the filter removes.
        eps_multiplier: ART's multiplier of ``expected_pp_poison``: ART flags the points of each
            class above the (1 − eps_multiplier · expected_pp_poison) quantile of its scores; a
            number >= 0. Default 1.5 (Tran et al.'s 1.5·ε).
        batch_size: Number of inputs per forward pass when ART reads the activations; a positive
            integer. Only memory and speed depend on it. Default 128.
        centre: Whether ART is run per class on the class-centred representation r_i − r̄_c (the
            paper's score |v_cᵀ(r_i − r̄_c)|); True (default). False runs ART exactly as shipped,
            scoring the uncentred |v_cᵀ r_i| (see the module docstring).
    """

    expected_pp_poison: float | None = None
    eps_multiplier: float = 1.5
    batch_size: int = 128
    centre: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        p = self.expected_pp_poison
        if p is not None and (not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0):
            raise ConfigError(f"art_spectral: expected_pp_poison must be None or a number in [0, 1], got {p!r}")
        check_number(self.eps_multiplier, "eps_multiplier", "art_spectral", allow_zero=True)
        check_int(self.batch_size, "batch_size", "art_spectral")
        check_bool(self.centre, "centre", "art_spectral")


def _art_run(view: ArtView, x: np.ndarray, y: np.ndarray, num_classes: int, cfg: ArtSpectralConfig,
             p: float) -> tuple[np.ndarray, np.ndarray]:
    """One run of ART's detector on (x, y): (flag (n,) 0/1, ART's outlier score (n,)) per point."""
    from art.defences.detector.poison import SpectralSignatureDefense

    detector = SpectralSignatureDefense(view.classifier, x, one_hot(torch.from_numpy(y), num_classes),
                                        expected_pp_poison=p, batch_size=cfg.batch_size, eps_multiplier=cfg.eps_multiplier)
    _, is_clean = detector.detect_poison()
    feats = view.classifier.get_activations(x, layer=view.last_layer, batch_size=cfg.batch_size)
    feats = np.asarray(feats).reshape(len(x), -1)
    scores = np.zeros(len(x), dtype=np.float64)
    for c in np.unique(y).tolist():
        members = np.flatnonzero(y == c)
        scores[members] = SpectralSignatureDefense.spectral_signature_scores(feats[members]).reshape(-1)
    return 1.0 - np.asarray(is_clean, dtype=np.float64), scores


@register_defense("art_spectral")
class ArtSpectralDefense(ArtDefense[ArtSpectralConfig]):
    summary = "ART's spectral signatures (Tran et al. 2018): ART's outlier scores of class-centred features"

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        cfg: ArtSpectralConfig = self.config
        trained = self.trained_model(data, victim, model, progress)
        p = cfg.fraction if cfg.expected_pp_poison is None else float(cfg.expected_pp_poison)
        ys = data.y.cpu().numpy()
        flag = np.zeros(len(data), dtype=np.float64)
        scores = np.zeros(len(data), dtype=np.float64)
        with art_view(trained, data, cfg.layer) as view:
            x = art_inputs(trained, data.x)
            if not cfg.centre:
                flag, scores = _art_run(view, x, ys, data.num_classes, cfg, p)
            else:
                acts = np.asarray(view.classifier.get_activations(x, layer=view.last_layer, batch_size=cfg.batch_size))
                for c in np.unique(ys).tolist():
                    members = np.flatnonzero(ys == c)
                    offset = torch.from_numpy(acts[members].mean(0))
                    with view.shifted(offset):
                        flag[members], scores[members] = _art_run(view, x[members], ys[members], data.num_classes, cfg, p)
        info = {"layer": view.layer, "centre": cfg.centre, "n_flagged": int(flag.sum()), "expected_pp_poison": p}
        return torch.from_numpy(scores), info
