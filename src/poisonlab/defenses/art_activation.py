"""ART's activation clustering (Chen et al. 2018, "Detecting backdoor attacks on deep neural
networks by activation clustering"), ``art.defences.detector.poison.ActivationDefence``, as a
poisonlab defense. Needs ART (``pip install 'poisonlab[art]'``).

Threat model: the defender trains the victim on D and hands it to ART wrapped in a
``PyTorchClassifier`` (clip values from the data's bounds). ART reads the activations of one layer
(by default the penultimate features, see :mod:`poisonlab.defenses._art`), reduces them per class
(``reduce``, to ``nb_dims`` dimensions), splits each class into ``nb_clusters`` k-means clusters
and flags clusters as poison by its ``cluster_analysis`` heuristic (default "smaller": the smaller
cluster of every class).

Score. ART gives a verdict per point, not a score; poisonlab's filter and ROC-AUC need an order.
For point i of class c, in cluster k:

    score_i = flag_i + (1 − share_i) + u_i / n_c

* ``flag_i`` ∈ {0, 1}: 1 when ART flags i as poison (``is_clean_lst[i] == 0``);
* ``share_i`` = |cluster k| / n_c, the fraction of class c in i's cluster (the smaller, the more
  suspicious — the idea behind ART's "smaller" and "relative-size" heuristics);
* ``u_i`` ∈ [0, 1): the rank of i's distance (in ART's reduced space) to the centre of the class's
  largest cluster ART calls clean, among the points of cluster k, divided by |cluster k| — the
  farthest from the clean centre comes last.

So ART's flagged points come first (scores in [1, 2)), the rest in [0, 1); within each group a point
of a smaller cluster ranks higher, and within a cluster the farther from clean. The filter removes
``poison_count(fraction, N)`` points by global rank, not ART's whole flagged set. Deterministic
under the generator (ART's k-means and PCA draw from numpy's global generator; it is seeded here).

ART cannot cluster a class with fewer than max(``nb_clusters``, ``nb_dims``) points (PCA and k-means
fail); such classes are left out of ART's run and their points score 0 (``info["classes_skipped"]``).
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
from ..validation import check_int
from ._art import ArtDefense, ArtDetectorConfig, art_inputs, art_view, numpy_seeded, one_hot
from .base import register_defense

REDUCE = ("PCA", "FastICA")
ANALYSIS = ("smaller", "relative-size", "distance", "silhouette-scores")


@dataclass(frozen=True, kw_only=True)
class ArtActivationConfig(ArtDetectorConfig):
    """ART's ``detect_poison`` options: ``nb_clusters`` per class, ``nb_dims`` after ``reduce``
    ("PCA" or "FastICA"), ``cluster_analysis`` ("smaller", "relative-size", "distance",
    "silhouette-scores"); ``layer`` as in :class:`ArtDetectorConfig`.

    Activation clustering is due to Chen et al. 2018 ("Detecting backdoor attacks on deep neural
    networks by activation clustering"); these options are passed to ART's
    ``ActivationDefence.detect_poison``.

    Attributes:
        fraction: As in :class:`~poisonlab.defenses.base.DefenseConfig`: the fraction of the N
            points to remove (by global rank of the scores, not ART's whole flagged set), in
            [0, 1]. Default 0.03.
        layer: As in :class:`~poisonlab.defenses._art.ArtDetectorConfig`: "penultimate" (default)
            or "art".
        nb_clusters: Number of k-means clusters each class's reduced activations are split into;
            an integer >= 2. A class with fewer than max(nb_clusters, nb_dims) points is not
            clustered (its points score 0). Default 2.
        nb_dims: Number of dimensions the activations are reduced to (by ``reduce``) before
            clustering; a positive integer. Default 10.
        reduce: Dimensionality reduction applied per class before clustering: "PCA" (default) or
            "FastICA".
        cluster_analysis: ART's heuristic for which clusters are poison: "smaller" (default; the
            smaller cluster of each class), "relative-size", "distance" or "silhouette-scores".
            It sets ART's verdict, the ``flag_i`` term of the score.
    """

    nb_clusters: int = 2
    nb_dims: int = 10
    reduce: str = "PCA"
    cluster_analysis: str = "smaller"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.nb_clusters, "nb_clusters", "art_activation", minimum=2)
        check_int(self.nb_dims, "nb_dims", "art_activation")
        if self.reduce not in REDUCE:
            raise ConfigError(f"art_activation: reduce must be one of {list(REDUCE)}, got {self.reduce!r}")
        if self.cluster_analysis not in ANALYSIS:
            raise ConfigError(f"art_activation: cluster_analysis must be one of {list(ANALYSIS)}, "
                              f"got {self.cluster_analysis!r}")


def cluster_scores(clusters: np.ndarray, reduced: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The score of the module docstring for the points of one class: ``clusters`` (n,) ART's cluster
    ids, ``reduced`` (n, k) ART's reduced activations, ``clean`` (n,) ART's verdict (1 = clean)."""
    n = len(clusters)
    clusters = np.asarray(clusters).astype(np.int64)
    clean = np.asarray(clean).astype(bool)
    reduced = np.asarray(reduced, dtype=np.float64).reshape(n, -1)
    ids, sizes = np.unique(clusters, return_counts=True)
    size_of = dict(zip(ids.tolist(), sizes.tolist()))
    # the clean centre: the largest cluster whose members ART calls clean (any cluster if none is)
    clean_ids = [k for k in ids.tolist() if clean[clusters == k].all()] or ids.tolist()
    ref = max(clean_ids, key=lambda k: (size_of[k], -k))
    centre = reduced[clusters == ref].mean(0)
    dist = np.linalg.norm(reduced - centre, axis=1)
    out = np.empty(n, dtype=np.float64)
    for k in ids.tolist():
        members = np.flatnonzero(clusters == k)
        rank = np.empty(len(members), dtype=np.float64)
        rank[np.argsort(dist[members], kind="stable")] = np.arange(len(members))
        out[members] = (1.0 - size_of[k] / n) + rank / len(members) / n
    return out + (~clean).astype(np.float64)


@register_defense("art_activation")
class ArtActivationDefense(ArtDefense[ArtActivationConfig]):
    summary = "ART's activation clustering (Chen et al. 2018): points in clusters ART flags, smaller clusters first"

    def _score(self, data: Dataset, victim: Victim, *, generator: torch.Generator, model: nn.Module | None,
               reference: Dataset | None, progress: bool) -> tuple[torch.Tensor, dict[str, Any]]:
        from art.defences.detector.poison import ActivationDefence

        cfg: ArtActivationConfig = self.config
        trained = self.trained_model(data, victim, model, progress)
        counts = torch.bincount(data.y.cpu(), minlength=data.num_classes)
        need = max(cfg.nb_clusters, cfg.nb_dims)
        kept_classes = [c for c in range(data.num_classes) if int(counts[c]) >= need]
        skipped = [c for c in range(data.num_classes) if 0 < int(counts[c]) < need]
        scores = torch.zeros(len(data), dtype=torch.float64, device="cpu")  # ART works in numpy, on the host
        if not kept_classes:
            return scores, {"classes_skipped": skipped, "n_flagged": 0}
        # ART clusters every class 0..nb_classes-1 and fails on an empty or tiny one: run it on the
        # points of the classes it can cluster, relabelled 0..K'-1 (only ART's per-class split reads
        # nb_classes; the model's outputs are not used)
        kept = torch.tensor(kept_classes, device="cpu")
        index = torch.isin(data.y.cpu(), kept).nonzero().squeeze(1)
        relabel = torch.full((data.num_classes,), -1, dtype=torch.int64, device="cpu")
        relabel[kept] = torch.arange(len(kept_classes), device="cpu")
        sub = Dataset(data.x.cpu()[index], relabel[data.y.cpu()[index]], len(kept_classes), data.name, data.bounds)

        with art_view(trained, sub, cfg.layer) as view, numpy_seeded(generator):
            x = art_inputs(trained, sub.x)
            y = one_hot(sub.y, sub.num_classes) if sub.num_classes > 1 else sub.y.cpu().numpy()
            detector = ActivationDefence(view.classifier, x, y)
            _, is_clean = detector.detect_poison(nb_clusters=cfg.nb_clusters, nb_dims=cfg.nb_dims, reduce=cfg.reduce,
                                                 cluster_analysis=cfg.cluster_analysis)
            clusters_by_class, reduced_by_class = detector.clusters_by_class, detector.red_activations_by_class
        is_clean = np.asarray(is_clean, dtype=np.int64)
        sub_scores = np.zeros(len(sub), dtype=np.float64)
        ys = sub.y.cpu().numpy()
        for c in range(sub.num_classes):
            members = np.flatnonzero(ys == c)  # ART's per-class order is the order of the points
            sub_scores[members] = cluster_scores(clusters_by_class[c], reduced_by_class[c], is_clean[members])
        scores[index] = torch.from_numpy(sub_scores)
        return scores, {"classes_skipped": skipped, "layer": view.layer, "n_flagged": int((is_clean == 0).sum())}
