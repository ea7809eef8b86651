"""TGDA: Total Gradient Descent Ascent poisoning (Lu, Kamath & Yu 2022; thesis §2.4–2.6, Algorithm 1).

Threat model: indiscriminate, training-only, clean-label. The attacker adds ε·N points to D_tr;
each poison is L_θ(x⁰, y⁰) for a source point (x⁰, y⁰) ∈ D_p⁰ ⊂ D_tr and keeps the label y⁰.
The attacker (leader) is a generator network L_θ (``fc_autoencoder`` / ``conv_autoencoder``),
pretrained as an autoencoder on D_tr; the defender (follower) F_w starts from the clean-trained
victim. Objectives (non-zero-sum, eq. 2.1):

    follower  f(θ, w) = CE(F_w; D_tr ∪ L_θ(D_p⁰))          (minimised by w)
    leader    ℓ(θ, w) = CE(F_w; D_v)                        (maximised by θ)

Each round (one clean batch): m leader steps θ ← θ + α·D_θℓ with the total gradient

    D_θℓ = ∇_θℓ − ∇²_θw f · (∇²_ww f + λI)⁻¹ · ∇_w ℓ          (eq. 2.3; ∇_θℓ = 0 here)

computed by :func:`poisonlab.autodiff.total_gradient` with respect to the poison *images*
x_p = L_θ(D_p⁰) and chained through the generator (D_θℓ = J_θ(x_p)ᵀ D_{x_p}ℓ, exact because ℓ
reaches θ only through x_p), then n follower steps w ← w − β∇_w f.

Ablations are options: ``leader`` (who moves first in a round), ``formulation`` (``zero_sum``:
ℓ = f), ``pretrain.epochs`` (0: no attacker pretraining), ``m``, ``n``, ``start`` (``cold``: the follower restarts from
w_pre every round), ``partitions`` (K parts of D_tr attacked independently, then joined — how
the thesis scaled TGDA to ResNet-18).

``leader="defender"`` reverses the order of moves inside every round (n follower steps, then
m leader steps). A literal role swap — the defender taking total-gradient steps against an
attacker that follows ∇_θℓ — is degenerate for the non-zero-sum game, where ∇_θℓ = 0 (ℓ sees θ
only through w), so the order of moves is what this switch changes.

Implementation choices, checked on MNIST / LR (measured: docs/studies/tgda.md, bench/tgda_mnist.py,
and the tests):
* the total gradient is verified in sign and scale against central finite differences of ℓ at
  the exactly re-solved follower w*(θ ± hu) of f + λ/2‖w‖² (λ = ``solver.damping``);
* the leader steps with plain gradient ascent at α = 0.1 (the default; the thesis' α = 0.01 is
  preset ``thesis`` and moves the generator far less per epoch); Adam saturated the generator's
  sigmoid within an epoch and produced no accuracy drop;
* each round carries ≈ε·B poisons (``proportional``), the proportion the victim sees when it
  retrains, so f is an unbiased batch estimate of the follower's true objective;
* ``selection.every=k`` judges θ every k epochs the way the test stage will — the victim retrained
  from scratch with its recipe on D_tr ∪ L_θ(D_p⁰), with a seed of the attacker's — on the
  attacker's D_v, and returns the best θ. The warm-started follower has taken far more steps than
  the recipe's retrain, so its validation loss is not the retrained victim's, and without selection
  the drop is not monotone in the attack length. Each selection retrain costs a victim training,
  so the default judges every 50 epochs (5 retrains in 200 epochs): the same θ trajectory (the
  retrains draw no random numbers of the attack's), the same poisons where the last θ is best, a
  guard where it is not.

Bounds and shapes: the generator's sigmoid output is mapped onto the data's box
(``data.bounds.from_unit``; its input read through ``to_unit``), so poisons land inside it — pixels
in [0, 1] for images (the maps are then the identity), per-feature ranges for tabular data. That
needs finite bounds: infinite ones are refused before any work (UnsupportedError), as is
``conv_autoencoder`` on inputs that are not images (C, H, W). The default generator is
``fc_autoencoder`` for every input shape but colour images. ``radius`` is in the data's units.
The follower takes the victim recipe's optimiser (SGD with momentum / Nesterov / weight decay, Adam,
AdamW: :class:`~poisonlab.attacks.bilevel.FollowerOptimizer`, its state kept across rounds);
only a learning-rate schedule is approximated (by the base rate), as ``info["follower"]`` says (with
one warning). A coupled weight decay λ_wd (SGD, Adam) adds to the implicit solve's damping (the
follower's stationary point is that of f + λ_wd/2‖w‖²). Any victim module works.

Safeguards (:class:`SafeguardConfig`, on by default; counts in ``info["safeguards"]``): a trust region
on the leader's step relative to ‖θ‖, a CG that falls back by itself on negative curvature (normal
equations, then larger damping), and a check of every round with rollback and a halved leader step;
what still diverges raises :class:`~poisonlab.errors.DivergenceError`. On a convex victim (LR) at
the defaults none of them fires, and the poisons are those of the unguarded game.

Shapes: D_tr inputs (N, *input_shape) inside the bounds; poisons (ε·N, *input_shape) inside them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._version import __version__
from ..autodiff import CGOptions, CGResult, Params, total_gradient
from ..cache import ArtifactCache, cached_build, module_fingerprint, tensor_fingerprint
from ..data.types import AttackData, Dataset, PoisonedDataset, PoisonSet
from ..errors import ConfigError, DivergenceError, UnsupportedError
from ..models.generators import GENERATORS, IMAGE_ONLY_GENERATORS, build_generator, default_generator_name
from ..seeding import derive_seed, draw_seed, seeded_rng, torch_generator
from ..training import accuracy, mean_loss
from ..training.victim import Victim
from ..validation import check_bool, check_choice, check_int, check_number, check_radius
from . import bilevel as B
from ._radius import LinfProjectedGenerator
from .base import Attack, AttackConfig, register_attack
from .bilevel import FollowerOptimizer

WHAT = "attack 'tgda'"


HVP_METHODS = ("double_backward", "fwdrev")


@dataclass(frozen=True, kw_only=True)
class ImplicitSolverConfig:
    """The implicit-gradient solve of every leader step, (∇²_ww f + λI)⁻¹ ∇_w ℓ, by conjugate
    gradient with Hessian-vector products (:func:`poisonlab.autodiff.total_gradient`). Option group
    ``solver`` of :class:`TGDAConfig`.

    Attributes:
        iters: CG iterations per solve (an integer >= 1). Default 10 (the thesis').
        tol: Relative residual at which CG stops early, ‖r‖ ≤ tol·‖b‖. Default 1e-4.
        damping: λ added to the follower's Hessian (>= 0); it is also the L2 regularisation whose
            stationary point the implicit gradient differentiates. Default 0.01 (the thesis').
        warm_start: Start each solve from the previous solve's solution. Default true.
        normal_equations: Run CG on the normal equations (H + λI)²x = (H + λI)b, which converges
            for indefinite Hessians (neural networks) at two products per iteration. Default false.
        hvp_method: The Hessian-vector product: ``"double_backward"`` (reverse over reverse, least
            overhead on small models) or ``"fwdrev"`` (forward over reverse). Default
            ``"double_backward"``.
    """

    iters: int = 10
    tol: float = 1e-4
    damping: float = 0.01
    warm_start: bool = True
    normal_equations: bool = False
    hvp_method: str = "double_backward"

    def __post_init__(self) -> None:
        what = f"{WHAT}: solver"
        check_int(self.iters, "iters", what)
        check_number(self.tol, "tol", what)
        check_number(self.damping, "damping", what, allow_zero=True)
        for key in ("warm_start", "normal_equations"):
            check_bool(getattr(self, key), key, what)
        check_choice(self.hvp_method, "hvp_method", HVP_METHODS, what)

    def cg_options(self) -> CGOptions:
        """The CG options of one solve (damping, tol, ``iters`` as max_iter, normal_equations)."""
        return CGOptions(damping=self.damping, tol=self.tol, max_iter=self.iters,
                         normal_equations=self.normal_equations)


@dataclass(frozen=True, kw_only=True)
class SafeguardConfig:
    """What keeps the game finite on victims whose Hessian is not positive definite (neural networks)
    without hand-set solver options. Option group ``safeguard`` of :class:`TGDAConfig`; what the
    safeguards did is counted in ``info["safeguards"]``.

    * a trust region on the leader's step in the generator's parameter space: a step Δθ longer than
      ``trust_region``·‖θ‖ is shortened to that length (``steps_shrunk``); a non-finite gradient or
      step is not taken (``steps_rejected``);
    * a CG that falls back by itself (``cg_fallback``): a solve that meets negative curvature,
      leaves the finite range or ends far above its starting residual is redone on the normal
      equations, then with damping ×10 (up to 3 times; :func:`poisonlab.autodiff.safeguarded_cg`);
      the options that worked are kept for the rest of the attack (``cg_fallbacks``, ``solver``);
    * a check of every round: when the generator, the follower or the leader's loss ℓ is not finite
      after it, the round is undone (θ, the leader's and the follower's optimiser states, w, the
      warm start) and redone with the leader's step halved, at most ``backtracks`` times
      (``backtracks``; the halved step is kept: ``leader_lr_scale``). A round that still fails raises
      :class:`~poisonlab.errors.DivergenceError` naming the settings to change; the checkpoints
      written before it stay.

    Attributes:
        trust_region: The longest leader step relative to the generator's parameter norm (a number >
            0), or null for none (then non-finite steps are taken too, and only the round's check
            remains). Default 0.02 (on MNIST LR the default steps stay about 100 times below it).
        cg_fallback: Let the implicit-gradient CG fall back (normal equations, larger damping).
            Default true.
        backtracks: Halvings of the leader's step tried on a round that left the finite range (an
            integer >= 0; 0: the first such round raises). Default 5.
    """

    trust_region: float | None = 0.02
    cg_fallback: bool = True
    backtracks: int = 5

    def __post_init__(self) -> None:
        what = f"{WHAT}: safeguard"
        if self.trust_region is not None:
            check_number(self.trust_region, "trust_region", what)
        check_bool(self.cg_fallback, "cg_fallback", what)
        check_int(self.backtracks, "backtracks", what, minimum=0)


@dataclass(frozen=True, kw_only=True)
class AttackerPretrainConfig:
    """Pretraining of the attacker's generator L_θ as an autoencoder on D_tr (MSE, Adam; thesis
    §2.5.2 (1)) before the game; through the artifact cache. Option group ``pretrain`` of
    :class:`TGDAConfig`.

    Attributes:
        epochs: Passes over D_tr (an integer >= 0; 0: no pretraining, the thesis' "without
            pretraining" ablation). Default 5.
        lr: Adam's learning rate. Default 1e-3.
    """

    epochs: int = 5
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", f"{WHAT}: pretrain", minimum=0)
        check_number(self.lr, "lr", f"{WHAT}: pretrain")


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    """Selection of the generator the attack returns: every ``every`` epochs the victim is retrained
    from scratch with its recipe on D_tr ∪ L_θ(D_p⁰) (a seed of the attacker's) and judged on the
    attacker's D_v, and the best θ seen is returned (see :class:`TGDA`). Option group ``selection``
    of :class:`TGDAConfig`.

    Attributes:
        every: Attack epochs between selection retrains (an integer >= 0; epoch 0 and the last
            epoch are judged too); 0: no selection, the last θ is returned (the thesis' setting,
            preset ``thesis``). Default 50 (measured: see :class:`TGDAConfig`).
        metric: What the selection minimises on D_v: ``"accuracy"`` (ties: the higher loss) or
            ``"loss"`` (the loss is maximised). Default ``"accuracy"``.
    """

    every: int = 50
    metric: str = "accuracy"

    def __post_init__(self) -> None:
        check_int(self.every, "every", f"{WHAT}: selection", minimum=0)
        check_choice(self.metric, "metric", ("accuracy", "loss"), f"{WHAT}: selection")


@dataclass(frozen=True, kw_only=True)
class TGDAConfig(AttackConfig):
    """Options of :class:`TGDA`. Groups (``-A solver.iters=20``, or a mapping in YAML):
    ``solver`` (:class:`ImplicitSolverConfig`), ``pretrain`` (:class:`AttackerPretrainConfig`),
    ``selection`` (:class:`SelectionConfig`), ``safeguard`` (:class:`SafeguardConfig`), ``checkpoint``
    (:class:`~poisonlab.attacks.bilevel.CheckpointConfig`).

    Defaults: the settings measured best on MNIST / LR at ε = 3 % (measured: docs/studies/tgda.md),
    which differ from the thesis' literal ones in two options; ``preset: thesis`` (``-A preset=thesis``)
    restores those (explicit keys still override a preset):

    | option | default | preset ``thesis`` |
    | --- | --- | --- |
    | ``leader_lr`` | 0.1 | 0.01 |
    | ``selection.every`` | 50 (retrain from scratch, keep the best θ) | 0 (the last θ) |

    Everything else is the thesis' in both (200 epochs, m = 1, n = 20, β = the recipe's 0.1,
    batch 1000, 10 CG iterations, damping 0.01, 5 pretraining epochs).

    Attributes:
        epochs: Attack epochs: passes over D_tr, one round per clean batch (an integer >= 0).
            Default 200 (the thesis').
        m: Leader (total-gradient ascent) steps per round. Default 1.
        n: Follower (gradient descent) steps per round (0: the follower never moves). Default 20.
        leader_lr: α, the leader's step size on the generator's parameters θ. Default 0.1 (the
            measured setting; the thesis' 0.01 is preset ``thesis``).
        leader_optimizer: ``"sgd"`` (plain gradient ascent, the thesis) or ``"adam"``. Default ``"sgd"``.
        follower_lr: β, the follower's SGD step size; null: the victim recipe's learning rate.
            Default null.
        batch_size: Clean D_tr points per round; null: the victim recipe's batch size. Default null.
        val_batch_size: D_v points in the leader's loss ℓ per round; null: all of D_v. Default 1000.
        labels: The poisons' labels, set once before the game: ``"keep"`` (the source point's label,
            the thesis), ``"flip"`` (y ← C−1−y) or ``"max_loss"`` (the class the clean victim finds
            least likely for the source); the generator is conditioned on them. Default ``"keep"``.
        poisons_per_batch: Which poisons a round's follower loss f carries: ``"proportional"``
            (≈ ε·B per round, the proportion the victim retrains with), ``"all"`` (every poison,
            same weight as a clean point) or ``"weighted"`` (every poison, weighted so the poisons
            weigh ε/(1+ε)). Default ``"proportional"``.
        leader: Who moves first in a round: ``"attacker"`` (Algorithm 1) or ``"defender"``.
            Default ``"attacker"``.
        formulation: ``"nonzero_sum"`` (ℓ = CE on D_v) or ``"zero_sum"`` (ℓ = f). Default ``"nonzero_sum"``.
        start: ``"warm"`` (the follower keeps its parameters between rounds) or ``"cold"`` (it
            restarts from the clean victim every round). Default ``"warm"``.
        generator: The generator L_θ (``poisonlab.models.GENERATORS``); null: ``conv_autoencoder``
            for colour images, ``fc_autoencoder`` for any other input. Default null.
        generator_options: Keyword options of the generator (e.g. ``{"hidden": [256, 128]}``).
            Default ``{}``.
        radius: L∞ ball around each source input that the generator's output is projected onto, in
            the data's units (8/255 for pixels in [0, 1]); null: only the data's bounds. Default null.
        partitions: K: split D_tr into K parts attacked independently (their share of the budget
            each) and join the poisons (thesis §2.6.2). Default 1.
        workers: Processes for the partitions (on CUDA, worker i uses GPU i mod #GPUs). Default 1.
        dtype: Working precision, ``"float32"`` or ``"float64"``. Default ``"float32"``.
        log_every: Epochs between the follower's D_v loss/accuracy diagnostics in ``info``. Default 1.
        solver: The implicit-gradient CG solve (:class:`ImplicitSolverConfig`). Default its defaults.
        pretrain: The generator's autoencoder pretraining (:class:`AttackerPretrainConfig`).
            Default its defaults.
        selection: Returning the θ that a from-scratch retrain judges best (:class:`SelectionConfig`).
            Default its defaults (selection every 50 epochs).
        safeguard: The leader step's trust region, CG fallbacks and the rollback of rounds that
            leave the finite range (:class:`SafeguardConfig`). Default its defaults (all on).
        checkpoint: Resumable checkpoints (:class:`~poisonlab.attacks.bilevel.CheckpointConfig`).
            Default its defaults (none).
    """

    #: ``-A preset=thesis``: the thesis' literal settings (the defaults are the measured ones)
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {"thesis": {"leader_lr": 0.01, "selection.every": 0}}
    epochs: int = 200
    m: int = 1
    n: int = 20
    leader_lr: float = 0.1
    leader_optimizer: str = "sgd"
    follower_lr: float | None = None
    batch_size: int | None = None
    val_batch_size: int | None = 1000
    labels: str = "keep"
    poisons_per_batch: str = "proportional"
    leader: str = "attacker"
    formulation: str = "nonzero_sum"
    start: str = "warm"
    generator: str | None = None
    generator_options: dict = field(default_factory=dict)
    radius: float | None = None
    partitions: int = 1
    workers: int = 1
    dtype: str = "float32"
    log_every: int = 1
    solver: ImplicitSolverConfig = field(default_factory=ImplicitSolverConfig)
    pretrain: AttackerPretrainConfig = field(default_factory=AttackerPretrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    safeguard: SafeguardConfig = field(default_factory=SafeguardConfig)
    checkpoint: B.CheckpointConfig = field(default_factory=B.CheckpointConfig)

    def __post_init__(self) -> None:
        for key in ("epochs", "m", "n"):
            check_int(getattr(self, key), key, WHAT, minimum=0)
        for key in ("partitions", "workers", "log_every"):
            check_int(getattr(self, key), key, WHAT)
        B.check_steps(self, WHAT)
        check_choice(self.leader_optimizer, "leader_optimizer", ("sgd", "adam"), WHAT)
        check_choice(self.labels, "labels", B.LABEL_RULES, WHAT)
        check_choice(self.poisons_per_batch, "poisons_per_batch", ("proportional", "all", "weighted"), WHAT)
        check_choice(self.leader, "leader", ("attacker", "defender"), WHAT)
        check_choice(self.formulation, "formulation", ("nonzero_sum", "zero_sum"), WHAT)
        check_choice(self.start, "start", ("warm", "cold"), WHAT)
        if self.generator is not None and self.generator not in GENERATORS:
            raise ConfigError(f"{WHAT}: unknown generator {self.generator!r}; valid: {GENERATORS.names()}")
        if not isinstance(self.generator_options, dict):
            raise ConfigError(f"{WHAT}: generator_options must be a mapping")
        check_radius(self.radius, WHAT)
        for key, cls in (("solver", ImplicitSolverConfig), ("pretrain", AttackerPretrainConfig),
                         ("selection", SelectionConfig), ("safeguard", SafeguardConfig),
                         ("checkpoint", B.CheckpointConfig)):
            B.check_group(getattr(self, key), cls, key, WHAT)


# ---------------------------------------------------------------------------- the leader's gradient
def leader_gradient(
    fol: B.Follower,
    gen: nn.Module,
    w: Params,
    clean: tuple[torch.Tensor, torch.Tensor],
    sources: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    solver: CGOptions,
    x0: Params | None = None,
    hvp_method: str = "double_backward",
    poison_weight: float | None = None,
) -> tuple[Params, Any]:
    """D_θℓ for the generator parameters θ (in ``gen.parameters()`` order) and the CG solve.

    ``clean`` = (x, y) of the round's clean batch, ``sources`` = (x⁰, y⁰) of its poisons,
    ``val`` = (x, y) of the validation batch, or ``None`` for the zero-sum formulation (ℓ = f).
    ``poison_weight`` = ε weighs the poisons as in :meth:`Follower.weighted_mixed_loss`; ``None``:
    every point of clean ∪ poisons weighs the same. ``solver`` holds the CG options of the
    implicit-gradient solve (:meth:`ImplicitSolverConfig.cg_options`; with ``fallback`` it
    falls back, :func:`poisonlab.autodiff.safeguarded_cg`), ``x0`` warm-starts it.
    """
    xc, yc = clean
    x0b, y0b = sources
    theta = [p for p in gen.parameters() if p.requires_grad]
    with torch.enable_grad():
        xp = gen(x0b, y0b)

    def f(wt: Params, xp_: torch.Tensor) -> torch.Tensor:  # the follower f(w, x_p) on the round's batch
        if poison_weight is not None:
            return fol.weighted_mixed_loss(wt, xc, yc, xp_, y0b, poison_weight)
        return fol.mixed_loss(wt, xc, yc, xp_, y0b)

    if val is None:
        ell = f
    else:
        xv, yv = val

        def ell(wt: Params, xp_: torch.Tensor) -> torch.Tensor:  # the leader ℓ(w) on the validation batch
            return fol.loss(wt, xv, yv)

    d_x, solve = total_gradient(f, ell, w, (xp.detach(),), solver=solver, x0=x0, method=hvp_method)
    with torch.enable_grad():
        d_theta = torch.autograd.grad(xp, theta, grad_outputs=d_x[0], allow_unused=True)
    return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(theta, d_theta)), solve


def pretrain_autoencoder(gen: nn.Module, data: Dataset, *, epochs: int, lr: float, batch_size: int,
                         generator: torch.Generator, progress: bool) -> list[float]:
    """Train L_θ to reconstruct D_tr (MSE, Adam) — thesis §2.5.2 (1); returns the loss per epoch."""
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(epochs), desc="tgda: pretrain attacker", disable=not progress, leave=False, unit="ep"):
        perm = torch.randperm(len(data), generator=generator).to(data.x.device)
        total = 0.0
        for idx in torch.split(perm, batch_size):
            with torch.enable_grad():
                loss = F.mse_loss(gen(data.x[idx], data.y[idx]), data.x[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / max(len(data), 1))
    return losses


# ---------------------------------------------------------------------------- the attack
@register_attack("tgda")
class TGDA(Attack[TGDAConfig]):
    clean_label = True
    summary = "generator L_θ trained by total-gradient ascent on the follower's validation loss (Algorithm 1)"

    def keeps_labels(self) -> bool:
        """Clean-label with the default ``labels="keep"``; ``flip`` and ``max_loss`` change them."""
        return self.config.labels == "keep"

    def check_supported(self, data: AttackData, victim: Victim) -> None:
        """The generator's sigmoid is mapped onto the data's box, which must be finite; a convolutional
        generator needs image inputs (C, H, W)."""
        cfg: TGDAConfig = self.config
        if not data.bounds.is_finite:
            raise UnsupportedError(
                f"tgda: the generator ends in a sigmoid mapped onto the data's box, which needs finite bounds; "
                f"these are {data.bounds.describe()} with infinite entries (give finite per-feature bounds)")
        shape = data.train.input_shape
        gname = cfg.generator or default_generator_name(shape)
        if gname in IMAGE_ONLY_GENERATORS and len(shape) != 3:
            raise UnsupportedError(f"tgda: generator {gname!r} needs image inputs (N, C, H, W), the data's inputs are "
                                   f"{shape}; use generator 'fc_autoencoder'")

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator,
               progress: bool, cache: ArtifactCache | None = None) -> PoisonSet:
        cfg: TGDAConfig = self.config
        beta = cfg.follower_lr if cfg.follower_lr is not None else victim.spec.recipe.lr
        B.follower_note(victim.spec.recipe, beta, WHAT, modelled=True)  # warns once if a schedule is approximated
        k = min(cfg.partitions, n_poison)
        if k == 1:
            src = B.draw_sources(len(data.train), n_poison, generator)
            return self._attack_part(data, victim, src, draw_seed(generator), progress, cfg.checkpoint.dir, "", cache)
        # K partitions of D_tr, attacked independently with their share of the budget (thesis §2.6.2)
        perm = torch.randperm(len(data.train), generator=generator)
        parts = torch.tensor_split(perm, k)
        budgets = [len(b) for b in torch.tensor_split(torch.arange(n_poison), k)]
        bases = [draw_seed(generator) for _ in range(k)]
        jobs = [(dataclasses.replace(data, train=data.train.subset(idx)), torch.arange(nb), bases[i],
                 f"{cfg.checkpoint.dir}/part-{i}" if cfg.checkpoint.dir else None, f" [{i + 1}/{k}]")
                for i, (idx, nb) in enumerate(zip(parts, budgets))]
        if cfg.workers > 1:
            outs = _run_parallel(self.options(), jobs, victim, cfg.workers, cache)
        else:
            outs = [self._attack_part(d, victim, s, b, progress, c, t, cache) for d, s, b, c, t in jobs]
        srcs = [idx[o.source_index] for idx, o in zip(parts, outs)]
        infos = [o.info for o in outs]
        return PoisonSet(torch.cat([o.x for o in outs]), torch.cat([o.y for o in outs]), torch.cat(srcs),
                         {"partitions": infos, "seconds_per_epoch": sum(i["seconds_per_epoch"] for i in infos),
                          "follower": infos[0]["follower"]})

    def _pretrained(self, gen: nn.Module, gname: str, train: Dataset, bs: int, base: int, progress: bool,
                    cache: ArtifactCache | None) -> list[float]:
        """Pretrain ``gen`` in place as an autoencoder on D_tr (thesis §2.5.2 (1)), through ``cache``
        (the artifact cache (kind ``tgda_generator``): the same initial generator, data and recipe load the
        stored weights instead. Returns the loss per pretraining epoch."""
        cfg: TGDAConfig = self.config

        def key() -> dict[str, Any]:
            p = next(gen.parameters())
            out = {"generator": gname, "generator_options": dict(cfg.generator_options), "radius": cfg.radius,
                   "init": module_fingerprint(gen), "data": tensor_fingerprint(train.x, train.y),
                   "epochs": cfg.pretrain.epochs, "lr": cfg.pretrain.lr, "batch_size": bs, "seed": base,
                   "dtype": str(p.dtype), "device": p.device.type, "poisonlab_version": __version__,
                   "torch_version": torch.__version__}
            if not train.bounds.is_unit:  # the box maps are not in the weights (unit box: the keys of before)
                out["bounds"] = train.bounds.to_json()
            return out

        def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            losses = pretrain_autoencoder(gen, train, epochs=cfg.pretrain.epochs, lr=cfg.pretrain.lr, batch_size=bs,
                                          generator=torch_generator(base, "tgda-pretrain"), progress=progress)
            return gen.state_dict(), {"pretrain_loss": losses}

        state, record, _ = cached_build(cache, "tgda_generator", key, build)
        gen.load_state_dict(state)  # the stored copy on a miss too, so a hit and a miss give the same weights
        return list(record.get("pretrain_loss", []))

    def _attack_part(self, data: AttackData, victim: Victim, sources: torch.Tensor, base: int,
                     progress: bool, checkpoint: str | None, tag: str, cache: ArtifactCache | None = None) -> PoisonSet:
        """Algorithm 1 on one (part of) D_tr with poison sources ``sources`` (indices into it): the
        generator, the follower and their optimisers, then :class:`_TGDAGame` on the shared game loop
        (:func:`~poisonlab.attacks.bilevel.run_game`), then the selected θ's poisons."""
        cfg: TGDAConfig = self.config
        dtype = B.DTYPES[cfg.dtype]
        device = victim.device
        T = B.AttackTensors.build(data, sources, device, dtype)
        bs = cfg.batch_size or victim.spec.recipe.batch_size or len(T.train)
        beta = cfg.follower_lr if cfg.follower_lr is not None else victim.spec.recipe.lr

        fol, w_pre = B.Follower.from_model(victim.clean_model(), dtype)
        fopt = FollowerOptimizer.for_recipe(victim.spec.recipe, fol.step_sizes(beta))  # the recipe's optimiser
        if cfg.labels != "keep":  # the poisons' labels, set once (the generator is conditioned on them)
            T = dataclasses.replace(T, y0=B.initial_labels(cfg.labels, T.y0, T.train.num_classes, fol, w_pre, T.x0))
        box = T.train.bounds
        gname = cfg.generator or default_generator_name(T.train.x.shape[1:])
        with seeded_rng(derive_seed(base, "tgda-generator-init"), device):
            gen = build_generator(gname, T.train.x.shape[1:], T.train.num_classes, bounds=box, **cfg.generator_options)
        gen = gen.to(device, dtype)
        if cfg.radius is not None:
            gen = LinfProjectedGenerator(gen, cfg.radius, box)
        theta: list[torch.Tensor] = [p for p in gen.parameters()]
        opt: torch.optim.Optimizer = (torch.optim.Adam(theta, lr=cfg.leader_lr) if cfg.leader_optimizer == "adam"
                                      else torch.optim.SGD(theta, lr=cfg.leader_lr))

        resumable = {k: v for k, v in self.options().items() if k not in ("epochs", "checkpoint", "log_every")}
        fp = B.fingerprint("tgda", resumable, len(T.train), len(T.val), sources.tolist()[:64], base,
                           tensor_fingerprint(data.train.x, data.train.y, data.val.x, data.val.y), victim.spec.model,
                           *B.bounds_key(data.bounds))
        ckpt = B.Checkpoint(checkpoint, fp, cfg.checkpoint.every)  # this part's directory
        cg = dataclasses.replace(cfg.solver.cg_options(), fallback=cfg.safeguard.cg_fallback)
        if fopt.coupled_l2:  # the follower's stationary point is that of f + λ_wd/2‖w‖² (SGD's and Adam's weight decay)
            cg = dataclasses.replace(cg, damping=cg.damping + fopt.coupled_l2)
        info: dict[str, Any] = {"generator": gname, "n_poison": len(sources), "batch_size": bs,
                                "follower_lr": beta,
                                "follower": B.follower_description(victim.spec.recipe, beta, modelled=True)[0],
                                "val_loss": [], "val_accuracy": [], "cg_iterations": [],
                                "leader_grad_norm": [], "max_relative_step": [], "pretrain_loss": [],
                                "safeguards": {"steps_shrunk": 0, "steps_rejected": 0, "backtracks": 0,
                                               "cg_fallbacks": {}, "leader_lr_scale": 1.0,
                                               "solver": {"normal_equations": cg.normal_equations, "damping": cg.damping,
                                                          "max_iter": cg.max_iter}}}
        every = cfg.selection.every
        if every:
            info["selection"] = []  # [epoch, D_v accuracy, D_v loss] of each from-scratch retrain
            info["selected_epoch"] = None
        game = _TGDAGame(self, _RoundState(theta, opt, w_pre, None, fopt), info, fol=fol, gen=gen, w_pre=w_pre, T=T,
                         data=data, victim=victim, base=base, cg=cg, checkpoint=checkpoint,
                         pretrain=lambda: self._pretrained(gen, gname, T.train, bs, base, progress, cache))
        schedule = B.EpochSchedule(len(T.train), len(sources), len(T.val), bs, cfg.val_batch_size, cfg.poisons_per_batch,
                                   base)
        B.run_game(game, desc=f"tgda{tag}", epochs=cfg.epochs, schedule=schedule,
                   evaluation=B.Evaluation.of(fol, T.val, cfg.log_every), checkpoint=ckpt, progress=progress)
        if every and cfg.epochs % every:
            # the last epoch is judged too; not checkpointed, so a longer resumed run sees the same history
            game.select(cfg.epochs)
        if game.best is not None:  # the generator of the selected epoch
            with torch.no_grad():
                for p, v in zip(theta, game.best):
                    p.copy_(v)
        return PoisonSet(self._poisons(gen, T), T.y0.cpu(), T.source_index, info)

    def _round(self, fol: B.Follower, gen: nn.Module, g: "_RoundState", w_pre: Params, T: B.AttackTensors, r: B.Round,
               cg: CGOptions, pw: float | None, stats: dict[str, list[float]], sg: dict[str, Any]) -> CGOptions:
        """One round in place on ``g``: m leader steps and n follower steps (in the order ``leader``
        says). Returns the CG options for the next solve (those a fallback left)."""
        cfg: TGDAConfig = self.config
        xc, yc = T.train.x[r.clean], T.train.y[r.clean]
        x0b, y0b = T.x0[r.poison], T.y0[r.poison]
        if cfg.leader == "defender":
            g.w = self._follow(fol, g.fopt, gen, g.w, w_pre, xc, yc, x0b, y0b, pw)
        if len(r.poison):
            val = None if cfg.formulation == "zero_sum" else (T.val.x[r.val], T.val.y[r.val])
            for _ in range(cfg.m):
                grads, solve = leader_gradient(
                    fol, gen, g.w, (xc, yc), (x0b, y0b), val, solver=cg, x0=g.solve if cfg.solver.warm_start else None,
                    hvp_method=cfg.solver.hvp_method, poison_weight=pw)
                g.solve = solve.value
                cg = self._note_solve(solve.cg, cg, sg)
                gnorm, rel = self._leader_step(g, grads, sg)
                stats["cg"].append(solve.cg.iterations)
                stats["gnorm"].append(gnorm)
                stats["rel"].append(rel)
        if cfg.leader == "attacker":
            g.w = self._follow(fol, g.fopt, gen, g.w, w_pre, xc, yc, x0b, y0b, pw)
        return cg

    @staticmethod
    def _note_solve(res: CGResult, cg: CGOptions, sg: dict[str, Any]) -> CGOptions:
        """Count a solve's fallbacks; keep the options that worked for the next solves."""
        for label in res.fallbacks:
            kind = label.split("=")[0]
            sg["cg_fallbacks"][kind] = sg["cg_fallbacks"].get(kind, 0) + 1
        if res.fallbacks and res.solver is not None and res.finite:
            cg = dataclasses.replace(cg, normal_equations=res.solver.normal_equations, damping=res.solver.damping,
                                     max_iter=res.solver.max_iter)
            sg["solver"] = {"normal_equations": cg.normal_equations, "damping": cg.damping, "max_iter": cg.max_iter}
        return cg

    def _leader_step(self, g: "_RoundState", grads: Params, sg: dict[str, Any]) -> tuple[float, float]:
        """θ ← θ + α·D_θℓ through the leader's optimiser, inside the trust region ‖Δθ‖ ≤ ρ‖θ‖; a
        non-finite gradient is not applied. Returns (‖D_θℓ‖, ‖Δθ‖/‖θ‖ before the trust region)."""
        rho = self.config.safeguard.trust_region
        theta, opt = g.theta, g.opt
        def sq_norm(ts: Sequence[torch.Tensor]) -> torch.Tensor:  # in float64: a huge step must not overflow
            return sum(torch.linalg.vector_norm(t, dtype=torch.float64) ** 2 for t in ts)

        with torch.no_grad():
            gnorm = math.sqrt(float(sq_norm(grads)))  # one host read
        if rho is not None and not math.isfinite(gnorm):
            sg["steps_rejected"] += 1
            return gnorm, 0.0
        old = [p.detach().clone() for p in theta]
        opt.zero_grad(set_to_none=True)
        for p, d in zip(theta, grads):
            p.grad = -d  # ascent on ℓ
        opt.step()
        with torch.no_grad():
            delta = [p - o for p, o in zip(theta, old)]
            dn, tn = (math.sqrt(v) for v in torch.stack([sq_norm(delta), sq_norm(old)]).tolist())
            rel = dn / max(tn, 1e-30)
            if rho is None:  # no trust region: the step as the optimiser made it (the round's check remains)
                pass
            elif not math.isfinite(dn):
                for p, o in zip(theta, old):
                    p.copy_(o)
                sg["steps_rejected"] += 1
            elif rel > rho:
                s = rho * tn / dn
                for p, o, d in zip(theta, old, delta):
                    p.copy_(o + s * d)
                sg["steps_shrunk"] += 1
        return gnorm, rel

    @staticmethod
    def _poisons(gen: nn.Module, T: B.AttackTensors) -> torch.Tensor:
        """L_θ(D_p⁰): the poison inputs, float32 on the CPU, inside the data's bounds (the clamp only
        removes the rounding of the [0, 1] -> box map and of the float32 cast)."""
        with torch.no_grad():
            xs = [gen(T.x0[sl], T.y0[sl]) for sl in B.chunks(len(T.x0), 1024)]
        x = torch.cat(xs) if xs else T.x0[:0]
        return T.train.bounds.clamp(x.to("cpu", torch.float32))

    def _select(self, gen: nn.Module, theta: list[torch.Tensor], T: B.AttackTensors, data: AttackData,
                victim: Victim, base: int, epoch: int, info: dict[str, Any],
                best: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Judge the current θ as the test stage will, but on the attacker's D_v: retrain the victim
        from scratch with its recipe on D_tr ∪ L_θ(D_p⁰) (a seed of the attacker's, not the victim's)
        and measure D_v accuracy and loss. Returns the parameters of the best θ so far."""
        cfg: TGDAConfig = self.config
        poisons = PoisonSet(self._poisons(gen, T), T.y0.cpu(), T.source_index)
        t0 = time.perf_counter()
        model = victim.spec.train(PoisonedDataset.combine(data.train, poisons).dataset, derive_seed(base, "tgda-select"))
        row = [epoch, accuracy(model, data.val), mean_loss(model, data.val)]
        info["selection_seconds"] = info.get("selection_seconds", 0.0) + time.perf_counter() - t0

        def key(r: list) -> tuple[float, float]:  # smaller is better for the attacker
            return (r[1], -r[2]) if cfg.selection.metric == "accuracy" else (-r[2], r[1])

        improved = best is None or all(key(row) < key(r) for r in info["selection"])
        info["selection"].append(row)
        if improved:
            info["selected_epoch"] = epoch
            return [p.detach().clone() for p in theta]
        assert best is not None  # with no best yet, this θ is an improvement
        return best

    def _follow(self, fol: B.Follower, fopt: FollowerOptimizer, gen: nn.Module, w: Params, w_pre: Params,
                xc: torch.Tensor, yc: torch.Tensor, x0b: torch.Tensor, y0b: torch.Tensor, pw: float | None) -> Params:
        """n follower steps on f with the recipe's optimiser (from w_pre, its state reset, when ``start="cold"``)."""
        cfg: TGDAConfig = self.config
        if cfg.n == 0:
            return w
        with torch.no_grad():
            xp = gen(x0b, y0b)
        start = w
        if cfg.start == "cold":
            start = w_pre
            fopt.reset()
        if pw is not None:
            return B.follower_steps(fopt, lambda ws: fol.weighted_mixed_loss(ws, xc, yc, xp, y0b, pw), start, cfg.n)
        x, y = fol.mixed_batch(xc, yc, xp, y0b)  # the poisons are fixed during the steps: joined once
        return B.follower_steps(fopt, lambda ws: fol.loss(ws, x, y), start, cfg.n)


class _RoundState:
    """The state one TGDA round changes — the generator's parameters θ (in place) and its optimiser,
    the follower's w and optimiser state, the warm start of the next solve — with the snapshot and
    restore of the round's rollback."""

    def __init__(self, theta: list[torch.Tensor], opt: torch.optim.Optimizer, w: Params, solve: Params | None,
                 fopt: FollowerOptimizer) -> None:
        self.theta, self.opt, self.w, self.solve, self.fopt = theta, opt, w, solve, fopt

    def snapshot(self) -> tuple:
        """The state before a round (w, the solve and the follower's state are never changed in place)."""
        opt_state = {p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
                     for p, st in self.opt.state.items()}
        return [p.detach().clone() for p in self.theta], opt_state, self.w, self.solve, self.fopt.snapshot()

    def restore(self, snap: tuple) -> None:
        theta, opt_state, self.w, self.solve, fsnap = snap
        with torch.no_grad():
            for p, v in zip(self.theta, theta):
                p.copy_(v)
        self.opt.state.clear()
        for p, st in opt_state.items():
            self.opt.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
        self.fopt.restore(fsnap)

    def finite(self, fol: B.Follower, T: B.AttackTensors, r: B.Round, formulation: str) -> bool:
        """The round's check (one host read): θ and w finite, and the leader's loss ℓ on the round's
        validation batch at the new w (non-zero-sum) finite."""
        with torch.no_grad():
            flags = [torch.isfinite(p).all() for p in self.theta] + [torch.isfinite(p).all() for p in self.w]
            if formulation != "zero_sum" and len(r.val):
                flags.append(torch.isfinite(fol.loss(self.w, T.val.x[r.val], T.val.y[r.val])))
            return bool(torch.stack(flags).all())


class _TGDAGame(B.Game):
    """Algorithm 1 on the shared game loop (:func:`~poisonlab.attacks.bilevel.run_game`).

    A round is :meth:`TGDA._round` under the round's check: a round that leaves the finite range is
    undone and redone with the leader's step halved (``safeguard.backtracks`` times at most, then
    :class:`~poisonlab.errors.DivergenceError`). An epoch's end adds the mean CG iterations, the mean
    ‖D_θℓ‖ and the longest relative step of its rounds to ``info`` and, every ``selection.every``
    epochs, judges θ (:meth:`TGDA._select`). A fresh start pretrains the generator and judges θ at
    epoch 0, and is checkpointed so a resume redoes neither. A checkpoint holds θ (``theta.*``), w,
    the warm start (``solve.*``), the selected θ (``best.*``) and both optimisers' states.
    """

    checkpoint_start = True

    def __init__(self, attack: TGDA, g: _RoundState, info: dict[str, Any], *, fol: B.Follower, gen: nn.Module,
                 w_pre: Params, T: B.AttackTensors, data: AttackData, victim: Victim, base: int, cg: CGOptions,
                 checkpoint: str | None, pretrain: Callable[[], list[float]]) -> None:
        super().__init__(info)
        self.attack, self.cfg, self.g = attack, attack.config, g
        self.fol, self.gen, self.w_pre, self.T, self.data, self.victim, self.base = fol, gen, w_pre, T, data, victim, base
        self.cg = cg  # the CG options of the next solve (sticky fallbacks)
        self.pw = len(T.x0) / len(T.train) if self.cfg.poisons_per_batch == "weighted" else None
        self.where, self.pretrain = checkpoint, pretrain
        self.best: list[torch.Tensor] | None = None  # θ of the best selection so far
        self.stats: dict[str, list[float]] = {"cg": [], "gnorm": [], "rel": []}  # of this epoch's leader steps

    @property
    def w(self) -> Params:
        return self.g.w

    @property
    def sg(self) -> dict[str, Any]:
        """The safeguards' counts (``info["safeguards"]``, the checkpoint's after a resume)."""
        return self.info["safeguards"]

    def begin(self) -> None:
        if self.cfg.pretrain.epochs > 0:
            self.info["pretrain_loss"] = self.pretrain()
        if self.cfg.selection.every:
            self.select(0)

    def select(self, epoch: int) -> None:
        """Judge θ after ``epoch`` epochs (:meth:`TGDA._select`), keeping the best θ."""
        self.best = self.attack._select(self.gen, self.g.theta, self.T, self.data, self.victim, self.base, epoch,
                                        self.info, self.best)

    def play(self, epoch: int, index: int, r: B.Round) -> None:
        cfg, g, sg = self.cfg, self.g, self.sg
        guard = cfg.safeguard
        snap = g.snapshot()
        for attempt in range(guard.backtracks + 1):
            self.cg = self.attack._round(self.fol, self.gen, g, self.w_pre, self.T, r, self.cg, self.pw, self.stats, sg)
            if g.finite(self.fol, self.T, r, cfg.formulation):  # the round's check: θ, w and ℓ finite
                return
            g.restore(snap)
            if attempt == guard.backtracks:
                raise DivergenceError(
                    f"tgda: the game left the finite range (generator, follower or leader loss) in epoch "
                    f"{epoch + 1}, round {index + 1}, after {guard.backtracks} halvings of the leader's step; lower "
                    f"leader_lr (now {cfg.leader_lr:g}), raise solver.damping (now {cfg.solver.damping:g}) or tighten "
                    f"safeguard.trust_region (now {guard.trust_region}); checkpoints written so far stay"
                    + (f" in {self.where}" if self.where else ""))
            sg["backtracks"] += 1
            sg["leader_lr_scale"] *= 0.5
            self._set_leader_lr()

    def _set_leader_lr(self) -> None:
        """The leader's step: ``leader_lr`` times the backtracks' ``leader_lr_scale``."""
        for group in self.g.opt.param_groups:
            group["lr"] = self.cfg.leader_lr * self.sg["leader_lr_scale"]

    def end_epoch(self, epochs_done: int) -> None:
        s, info = self.stats, self.info
        info["cg_iterations"].append(sum(s["cg"]) / max(len(s["cg"]), 1))
        info["leader_grad_norm"].append(sum(s["gnorm"]) / max(len(s["gnorm"]), 1))
        info["max_relative_step"].append(max(s["rel"], default=0.0))
        self.stats = {"cg": [], "gnorm": [], "rel": []}
        every = self.cfg.selection.every
        if every and epochs_done % every == 0:
            self.select(epochs_done)

    def postfix(self) -> dict[str, str]:
        return {"cg": f"{self.info['cg_iterations'][-1]:.1f}"}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        g = self.g
        ftensors, fmeta = g.fopt.state()
        return ({**B.pack("theta", g.theta), **B.pack("w", g.w), **B.pack("solve", g.solve or ()),
                 **B.pack("best", self.best or ()), **B.optimizer_state(g.opt, g.theta), **ftensors},
                {"follower_state": fmeta})

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        g = self.g
        with torch.no_grad():
            for p, v in zip(g.theta, B.unpack("theta", tensors, g.theta)):
                p.copy_(v)
        g.w = B.unpack("w", tensors, self.w_pre)
        B.load_optimizer_state(g.opt, g.theta, tensors)
        g.fopt.load_state(tensors, meta.get("follower_state", {}), self.w_pre)
        if "solve.0" in tensors:
            g.solve = B.unpack("solve", tensors, self.w_pre)
        if "best.0" in tensors:
            self.best = list(B.unpack("best", tensors, g.theta))
        self.cg = dataclasses.replace(self.cg, **self.sg["solver"])  # the solver the fallbacks left (sticky)
        self._set_leader_lr()  # the halved step the backtracks left


# ---------------------------------------------------------------------------- parallel partitions
def _partition_worker(args: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    options, data, sources, base, ckpt, tag, victim, slot, cache_root = args
    torch.set_num_threads(1)
    if torch.cuda.is_available() and victim.device.type == "cuda":
        recipe = dataclasses.replace(victim.spec.recipe, device=f"cuda:{slot % torch.cuda.device_count()}")
        victim = dataclasses.replace(victim, spec=dataclasses.replace(victim.spec, recipe=recipe))
    cache = ArtifactCache(cache_root) if cache_root is not None else None  # the parent's cache, by its directory
    out = TGDA(**options)._attack_part(data, victim, sources, base, False, ckpt, tag, cache)
    return out.x, out.y, out.source_index, out.info


def _run_parallel(options: dict, jobs: list, victim: Victim, workers: int, cache: ArtifactCache | None) -> list[PoisonSet]:
    """Run the partitions in ``workers`` spawned processes (same results as sequential: each
    partition depends only on its data, sources and seed)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    root = str(cache.root) if cache is not None else None
    args = [(options, d, s, b, c, t, victim, i, root) for i, (d, s, b, c, t) in enumerate(jobs)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        outs = list(pool.map(_partition_worker, args))
    return [PoisonSet(x, y, s, info) for x, y, s, info in outs]
