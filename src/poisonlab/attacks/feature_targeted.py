"""Feature-targeted (FT) attack on a fixed feature extractor (thesis chapter 4; Lu, Yang & Yu,
"Indiscriminate Data Poisoning Attacks on Pre-trained Feature Extractors", SaTML 2024).

Threat model: clean-label, additive, the attacker knows the (frozen) extractor φ and the victim's
linear head. Input-space attacks must optimise through φ, which is hard under an L∞ constraint;
FT splits the problem in three stages:

(a) a *target* head: GradPC (Sun et al. 2020) corrupts the clean-trained linear head W on the
    attacker's validation *features* (the ``gradpc`` target of the ``gc`` attack);
(b) Gradient Canceling in feature space: the features φ(D_tr) are treated as a dataset and ε·N
    poisoned *features* are crafted so that the target head becomes stationary (attack ``gc`` on
    a logistic-regression victim over features);
(c) inversion: each poisoned feature f*_j is mapped back to an input by
    min_x ||φ(x) − f*_j||²  s.t. x ∈ bounds, ||x − x_src||_∞ ≤ radius (optional)
    (:func:`poisonlab.pretrain.invert_features`, starting from the source input; ``bounds`` are the
    data's, pixels in [0, 1] for images, and ``radius`` is in the data's units).

Features are rescaled per dimension to [0, 1] with the clean features' min/max (the head is
rescaled exactly, so stage (b) sees an equivalent linear model and GC's box is the range of
features the clean data reach). Works with any victim that splits into features + linear head
(``linear_probe``/``fine_tune`` extractors, nn, cnn, resnet18; logistic regression with φ = pixels;
a user's module with ``features`` and a ``head`` ``nn.Linear``, an ``nn.Sequential`` ending in an
``nn.Linear``, or a bare ``nn.Linear``), on inputs of any shape; any other victim is refused
before any work (:class:`~poisonlab.errors.UnsupportedError`).
Shapes: inputs (n, *input_shape); features (n, D); poisons (ε·N, *input_shape) with their source labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..cache import ArtifactCache
from ..data.types import AttackData, Dataset, PoisonSet
from ..errors import ConfigError, UnsupportedError
from ..models.extractors import split_head
from ..pretrain.invert import invert_features, relative_error
from ..training import TrainConfig, Victim, VictimSpec
from ..validation import check_int, check_number, check_radius
from .base import ATTACKS, Attack, AttackConfig, register_attack
from .gc import GCConfig
from .gradpc import GradPCConfig

WHAT = "attack 'feature_targeted'"


@dataclass(frozen=True, kw_only=True)
class FeatureTargetedConfig(AttackConfig):
    """Options of :class:`FeatureTargeted`: stage (a) is GradPC on the head with the option group
    ``target_options`` (:class:`~poisonlab.attacks.gradpc.GradPCConfig`, the same group as ``gc``'s:
    ``-A target_options.eps_w=0.1``).

    Attributes:
        target_options: GradPC's options for the head target of stage (a), on the attacker's
            validation features. Default GradPC's defaults (ε_w = 0.5, 50 steps).
        gc_steps: Stage (b): Gradient Canceling steps on the [0, 1]-scaled features (an integer
            >= 0). Default 300.
        gc_lr: Stage (b): GC's step size, in the scaled feature units ([0, 1] per dimension).
            Default 0.02.
        radius: Stage (c): L∞ ball around each source input, in the data's units; null: only the
            data's bounds. Default null.
        invert_steps: Stage (c): projected-Adam steps of the feature inversion (an integer >= 0).
            Default 200.
        invert_lr: Stage (c): the inversion's step size, in the data's units. Default 0.02.
    """

    target_options: GradPCConfig = field(default_factory=GradPCConfig)
    gc_steps: int = 300
    gc_lr: float = 0.02
    radius: float | None = None
    invert_steps: int = 200
    invert_lr: float = 0.02

    def __post_init__(self) -> None:
        if not isinstance(self.target_options, GradPCConfig):
            raise ConfigError(f"{WHAT}: target_options is an option group (GradPC's options); give it as a mapping "
                              f"or as target_options.<option>=value, got {self.target_options!r}")
        for key in ("gc_steps", "invert_steps"):
            check_int(getattr(self, key), key, WHAT, minimum=0)
        for key in ("gc_lr", "invert_lr"):
            check_number(getattr(self, key), key, WHAT)
        check_radius(self.radius, WHAT)


def feature_head_split(model: torch.nn.Module) -> tuple[Any, torch.nn.Linear] | None:
    """(feature map, final linear layer with a bias) of a victim, or None when it has no such split:
    :func:`poisonlab.models.split_head` (``features`` + ``head``, or ``linear``), else an
    ``nn.Sequential`` ending in an ``nn.Linear`` (its other layers the features), else a bare
    ``nn.Linear`` (features = the flattened input)."""
    try:
        feats, head = split_head(model)
    except ConfigError:
        if isinstance(model, torch.nn.Sequential) and len(model) >= 1 and isinstance(model[-1], torch.nn.Linear):
            feats, head = (model[:-1] if len(model) > 1 else (lambda x: x.flatten(1))), model[-1]
        elif isinstance(model, torch.nn.Linear):
            feats, head = (lambda x: x.flatten(1)), model
        else:
            return None
    return (feats, head) if head.bias is not None else None


@torch.no_grad()
def features_of(feature_map, x: torch.Tensor, device: torch.device, batch: int = 1024) -> torch.Tensor:
    """φ(x) in batches: (N, *input_shape) -> (N, D) on the CPU."""
    return torch.cat([feature_map(x[i:i + batch].to(device)).cpu() for i in range(0, len(x), batch)])


@dataclass(frozen=True)
class FeatureSpace:
    """The features as a dataset in [0, 1]^D: f' = (f − lo) / span, per dimension, with lo/span
    from the clean D_tr ∪ D_v features; ``head_state`` is the head on f' (W·diag(span), b + W·lo),
    so LR(f') == head(f) exactly. ``data`` holds f' as images (N, D, 1, 1)."""

    data: AttackData
    lo: torch.Tensor
    span: torch.Tensor
    head_state: dict[str, torch.Tensor]

    def unscale(self, f_scaled: torch.Tensor) -> torch.Tensor:
        return self.lo + self.span * f_scaled.reshape(len(f_scaled), -1)


def feature_space(feature_map, head: torch.nn.Linear, data: AttackData, device: torch.device) -> FeatureSpace:
    f_tr = features_of(feature_map, data.train.x, device)
    f_val = features_of(feature_map, data.val.x, device)
    lo = torch.minimum(f_tr.min(0).values, f_val.min(0).values)
    span = (torch.maximum(f_tr.max(0).values, f_val.max(0).values) - lo).clamp_min(1e-6)
    d, c = f_tr.shape[1], data.num_classes

    def scaled(f: torch.Tensor, y: torch.Tensor) -> Dataset:
        return Dataset(((f - lo) / span).clamp(0.0, 1.0).view(-1, d, 1, 1), y, c, "features")

    w, b = head.weight.detach().cpu(), head.bias.detach().cpu()
    state = {"linear.weight": w * span, "linear.bias": b + w @ lo}
    return FeatureSpace(AttackData(scaled(f_tr, data.train.y), scaled(f_val, data.val.y), data.injection), lo, span, state)


@register_attack("feature_targeted")
class FeatureTargeted(Attack[FeatureTargetedConfig]):
    clean_label = True
    summary = "feature-targeted: GradPC head target, GC on features, inversion to inputs (optional L∞ radius)"

    def check_supported(self, data: AttackData, victim: Victim) -> None:
        """The victim must split into a feature map and a final ``nn.Linear`` head with a bias."""
        model = victim.spec.build(victim.seed)  # an untrained copy: the architecture is all that matters
        if feature_head_split(model) is None:
            raise UnsupportedError(
                f"feature_targeted needs a victim that splits into features + a linear head (attributes "
                f"'features' and 'head' (nn.Linear with a bias), a 'linear' layer, or an nn.Sequential ending in "
                f"nn.Linear); {victim.spec.model!r} ({type(model).__name__}) has no such split")

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool,
               cache: ArtifactCache | None = None) -> PoisonSet:
        cfg = self.config
        t0 = time.perf_counter()
        model = victim.clean_model()
        for p in model.parameters():
            p.requires_grad_(False)
        split = feature_head_split(model)
        assert split is not None, "check_supported (called by poison) found the split"
        feature_map, head = split
        device = victim.device
        fs = feature_space(feature_map, head, data, device)
        d, c = fs.lo.numel(), data.num_classes

        # (a)+(b): a logistic-regression victim over the scaled features, exactly the clean head, on
        # the victim's device
        recipe = TrainConfig(lr=victim.spec.recipe.lr, epochs=victim.spec.recipe.epochs,
                             batch_size=victim.spec.recipe.batch_size, device=victim.spec.recipe.device)
        fvictim = Victim(VictimSpec("lr", (d, 1, 1), c, recipe), victim.seed, fs.head_state)
        fdata = fs.data
        gc = ATTACKS.get("gc")(config=GCConfig(target="gradpc", target_options=cfg.target_options,
                                               steps=cfg.gc_steps, lr=cfg.gc_lr))
        fpois = gc.poison(fdata, fvictim, n_poison / len(data.train), generator=generator, progress=progress, cache=cache)
        if len(fpois) != n_poison:  # poison_count(n/N, N) == n; guard the round trip anyway
            raise RuntimeError(f"feature_targeted: feature-space GC returned {len(fpois)} points, expected {n_poison}")
        src, y = fpois.source_index, fpois.y
        f_target = fs.unscale(fpois.x)

        # (c): invert the poisoned features back to inputs, from the source images
        x_src = data.train.x[src].to(device)
        x, report = invert_features(feature_map, f_target.to(device), x_src, source=x_src, radius=cfg.radius,
                                    steps=cfg.invert_steps, lr=cfg.invert_lr, progress=progress and "ft invert",
                                    bounds=data.bounds)
        f_src = fs.unscale(fdata.train.x[src])
        info = {
            **report,
            "source_feature_rel_error": relative_error(f_src, f_target).mean().item(),  # before any inversion
            # how far GC in feature space got: ||mixed gradient at the target head|| / ||clean gradient||
            "feature_gc_initial_rel_grad_norm": fpois.info.get("initial_rel_grad_norm"),
            "feature_gc_final_rel_grad_norm": fpois.info.get("final_rel_grad_norm"),
            "radius": cfg.radius,
            "gc_feature_info": {k: v for k, v in fpois.info.items() if k != "grad_norm_trace"},
            "ft_seconds": time.perf_counter() - t0,
        }
        return PoisonSet(data.bounds.clamp(x.detach().cpu()), y.cpu(), src.cpu(), info)
