"""Improved min-max poisoning (i-Min-max; Koh, Steinhardt & Liang 2022, after Steinhardt et al. 2017).

Threat model: indiscriminate, training-only, additive (thesis Table 2.2's i-Min-max column). The
attacker knows D_tr, the victim's architecture, loss and learning rate, and adds n = ε·N points
whose inputs *and* labels it chooses inside a feasible set F. The attack is the online
(greedy) approximation of the zero-sum game max_{D_p ⊂ F} min_w L(D_tr ∪ D_p, w) (thesis eq. 2.2):
the defender runs online gradient descent on the clean data ∪ the poisons chosen so far, and the
attacker answers each defender iterate with the feasible point of highest loss. Round t
(``group_size`` = g poisons per round; g = 1, the default, is the paper's one point at a time):

    for each of the round's g poisons, candidates (x⁰, y): ``restarts`` clean starting points x⁰
        (drawn without replacement from D_tr) × the candidate labels y (``labels``, below);
    x ← Π_F(y)( x + α · sign ∇_x ℓ(w_t; x, y) )                         (``steps`` times, α = ``step_size``)
    keep, per poison, the candidate (x, y) with the largest ℓ(w_t; x, y)  ≈ argmax_{(x, y) ∈ F} ℓ(w_t; x, y)
    w_{t+1} ← w_t − β ∇_w [ (1 − λ_t) · CE(w_t; clean batch) + λ_t · CE(w_t; D_p^{≤t}) ]   (``follower_steps`` times)

with w_0 the clean-trained victim (``victim.clean_model()``), β the victim's recipe learning rate
(``follower_lr`` overrides it), the clean batch a shuffled mini-batch of D_tr (``batch_size``;
the recipe's by default) and λ_t the weight of the poisons chosen so far, D_p^{≤t}:
``weighting="union"`` (default): λ_t = t/(N + t), exactly the union D_tr ∪ D_p^{≤t} the paper's
defender trains on; ``"budget"``: λ = ε/(1+ε) from the first round on — the chosen points stand
in for the whole poison budget, as the single current point does in the original min-max attack
(Steinhardt et al. 2017). On MNIST LR at ε = 3 % "union" drops the accuracy more than "budget"
(measured: docs/studies/table-2-2.md). The poisons are the
points chosen over the n/g rounds (never revised: the greedy order is the algorithm).

Labels (``labels``): ``"max_loss"`` (default, the paper's choice of the label together with the
point): every class is a candidate label and the pair with the highest maximised loss wins;
``"flip"``: y = C−1−y⁰ of the starting point (the thesis' label-flip rule); ``"keep"``: y⁰ (the
inputs alone are attacked).

Feasible set (``feasible``): ``"box"`` (default): the data's bounds (``data.bounds``: [0, 1] for
pixels, per-feature ranges for tabular data) — the thesis' protocol, which runs no sanitiser;
``"sphere_slab"``: the box ∩ the feasible set of the sphere and slab defenses fit on the *clean*
D_tr (Steinhardt et al. 2017; Koh et al. 2022, whose attacks are built to evade them). For label y,
with μ_y the centroid of the clean class-y inputs (flattened) and μ the centroid of all of D_tr:

    sphere:  ‖x − μ_y‖₂ ≤ r_y,          r_y = the ``sphere_quantile`` of ‖x_i − μ_y‖ over clean class-y points
    slab:    |⟨x − μ_y, v_y⟩| ≤ s_y,     v_y = (μ_y − μ)/‖μ_y − μ‖ (the multi-class form of the binary
             slab's centroid-difference direction), s_y = the ``slab_quantile`` of |⟨x_i − μ_y, v_y⟩|.

A poison outside them would be removed by a defense that removes the clean points beyond those
quantiles. The projection Π_F(y) alternates projections onto the box, the ball and the slab a few
times, then pulls the point towards μ_y (which lies in every one of the three convex sets) just far
enough to satisfy the ball and the slab exactly — so every poison is feasible, not only nearly so.

Cost: per round, ``steps`` forward/backward passes over g·restarts·|labels| points plus
``follower_steps`` passes over a clean batch and the poisons so far, for n/g rounds (1 260 on
MNIST at ε = 3 %; measured time: docs/studies/table-2-2.md). Works on any
victim module and input shape (N, *input_shape) that has gradients with respect to its inputs; the
defender's steps are those of the victim recipe's optimiser (SGD with momentum / weight decay, Adam,
AdamW, its state carried across rounds; a schedule is approximated by the base rate, said so in
``info["follower"]``) with the network in eval mode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..autodiff import Params
from ..cache import ArtifactCache
from ..data.bounds import Bounds
from ..data.types import AttackData, Dataset, PoisonSet
from ..errors import ConfigError, UnsupportedError
from ..seeding import device_generator, draw_seed, torch_generator
from ..training.victim import Victim
from ..validation import check_choice, check_int, check_number
from . import bilevel as B
from .base import Attack, AttackConfig, register_attack
from .bilevel import FollowerOptimizer

WHAT = "attack 'i_min_max'"
LABELS = ("max_loss", "flip", "keep")
WEIGHTINGS = ("budget", "union")
FEASIBLE = ("box", "sphere_slab")
_PROJECTION_ROUNDS = 5  # alternating projections box → ball → slab before the exact pull towards μ_y


@dataclass(frozen=True, kw_only=True)
class IMinMaxConfig(AttackConfig):
    """Options (see the module docstring): ``group_size`` poisons chosen per round (1: one at a time);
        ``steps`` signed ascent steps of ``step_size`` (the data's units) per candidate; ``restarts``
        clean starting points per poison; ``labels`` "max_loss" | "flip" | "keep"; the defender's
        ``follower_steps`` SGD steps per round at ``follower_lr`` (None: the victim's recipe lr) on a
        clean batch of ``batch_size`` (None: the recipe's) ∪ the chosen poisons weighted by ``weighting``
        ("union" | "budget"); ``feasible`` "box" | "sphere_slab" with ``sphere_quantile`` and
        ``slab_quantile`` in (0, 1]; ``dtype``; ``trace_every`` (rounds between entries of the loss
        trace; None: ≈ 50 entries).

    Attributes:
        group_size: Poisons chosen per round (each round picks this many max-loss feasible points, then the
            defender's model is updated). Default ``1``.
        steps: Signed-gradient ascent steps on each candidate point's loss. Default ``20``.
        step_size: Size of each ascent step, in the data's units (projected onto the feasible set after each step). Default ``0.1``.
        restarts: Random clean starting points per poison (drawn without replacement, so each poison has its
            own source); the highest-loss candidate wins. Default ``1``.
        labels: How each poison's label is chosen: ``"max_loss"`` (every class is a candidate, the
            highest-loss (point, label) pair wins — the paper's argmax), ``"flip"`` (9 − y, i.e. C − 1 − y, of
            the start point) or ``"keep"``. Default ``"max_loss"``.
        follower_steps: Steps of the defender's model per round (the victim recipe's optimiser), on a
            clean batch plus every poison chosen so far. Default ``1``.
        follower_lr: The defender's learning rate; ``None``: the victim recipe's lr (a schedule is
            approximated by the base rate, noted in ``info["follower"]``). Default ``None``.
        batch_size: Clean points per defender step; ``None``: the victim recipe's batch size. Default ``None``.
        weighting: Weight of the chosen poisons in the defender's loss: ``"union"`` (exactly D_tr ∪ the t
            poisons so far, weight t/(N+t)) or ``"budget"`` (ε/(1+ε) from the first round). Default ``"union"``.
        feasible: The feasible set: ``"box"`` (the data's bounds) or ``"sphere_slab"`` (also inside the
            sphere and slab defenses' sets fitted on clean D_tr, Koh et al. 2022). Default ``"box"``.
        sphere_quantile: With ``feasible="sphere_slab"``: the sphere's radius per class, as this quantile of
            the clean points' distances to their class centroid. Default ``0.95``.
        slab_quantile: With ``feasible="sphere_slab"``: the slab's half-width per class, as this quantile of
            the clean points' projections on the centroid-minus-mean direction. Default ``0.95``.
        dtype: Arithmetic precision of the attack, ``"float32"`` or ``"float64"``. Default ``"float32"``.
        trace_every: Rounds between recorded defender losses in ``info`` (``None``: no trace). Default ``None``.
    """

    group_size: int = 1
    steps: int = 20
    step_size: float = 0.1
    restarts: int = 1
    labels: str = "max_loss"
    follower_steps: int = 1
    follower_lr: float | None = None
    batch_size: int | None = None
    weighting: str = "union"
    feasible: str = "box"
    sphere_quantile: float = 0.95
    slab_quantile: float = 0.95
    dtype: str = "float32"
    trace_every: int | None = None

    def __post_init__(self) -> None:
        check_int(self.group_size, "group_size", WHAT)
        check_int(self.steps, "steps", WHAT, minimum=0)
        check_number(self.step_size, "step_size", WHAT)
        check_int(self.restarts, "restarts", WHAT)
        check_choice(self.labels, "labels", LABELS, WHAT)
        check_int(self.follower_steps, "follower_steps", WHAT, minimum=0)
        if self.follower_lr is not None:
            check_number(self.follower_lr, "follower_lr", WHAT)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", WHAT)
        check_choice(self.weighting, "weighting", WEIGHTINGS, WHAT)
        check_choice(self.feasible, "feasible", FEASIBLE, WHAT)
        for key in ("sphere_quantile", "slab_quantile"):
            check_number(getattr(self, key), key, WHAT, maximum=1.0)  # a quantile in (0, 1]
        B.check_dtype(self.dtype, WHAT)
        if self.trace_every is not None:
            check_int(self.trace_every, "trace_every", WHAT)


def check_input_gradient(data: AttackData, victim: Victim, what: str) -> None:
    """Raise :class:`UnsupportedError` unless the victim's output has a gradient with respect to its
    inputs, checked on one training point with the untrained architecture (no training)."""
    model = victim.spec.build(victim.seed).eval()
    x = data.train.x[:1].to(victim.device).clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            out = model(x)
            g = torch.autograd.grad(out.float().sum(), x, allow_unused=True)[0] if out.requires_grad else None
    except RuntimeError as exc:
        raise UnsupportedError(f"{what}: the victim {victim.spec.model!r} cannot be differentiated with respect to "
                               f"its inputs ({str(exc).splitlines()[0]})") from None
    if g is None:
        raise UnsupportedError(f"{what}: the victim {victim.spec.model!r} has no gradient with respect to its inputs; "
                               "the attack moves the poisons along it")


# ---------------------------------------------------------------------------- the feasible set
@dataclass(frozen=True)
class SphereSlab:
    """Per class y: centroid μ_y (C, D), slab direction v_y (C, D), ball radius r_y and slab
        half-width s_y (C,), on flattened inputs; ``present[y]``: class y has clean points.

    Attributes:
        centroid: (C, d) clean class centroids of the flattened inputs. Required.
        direction: (C, d) unit slab directions (class centroid minus the overall mean). Required.
        radius: (C,) sphere radius per class. Required.
        width: (C,) slab half-width per class. Required.
        present: (C,) bool, which classes occur in D_tr. Required.
    """

    centroid: torch.Tensor
    direction: torch.Tensor
    radius: torch.Tensor
    width: torch.Tensor
    present: torch.Tensor

    @staticmethod
    def fit(train: Dataset, sphere_q: float, slab_q: float) -> SphereSlab:
        x = train.x.reshape(len(train), -1)
        C, D = train.num_classes, x.shape[1]
        mu = x.mean(0)
        cen, dirs = x.new_zeros(C, D), x.new_zeros(C, D)
        rad, wid = x.new_zeros(C), x.new_zeros(C)
        present = torch.zeros(C, dtype=torch.bool, device=x.device)
        for k in range(C):
            xk = x[train.y == k]
            if len(xk) == 0:
                continue
            present[k] = True
            cen[k] = xk.mean(0)
            d = cen[k] - mu
            norm = torch.linalg.vector_norm(d)
            if norm > 0:
                dirs[k] = d / norm
            rad[k] = torch.quantile(torch.linalg.vector_norm(xk - cen[k], dim=1), sphere_q)
            wid[k] = torch.quantile(((xk - cen[k]) @ dirs[k]).abs(), slab_q)
        return SphereSlab(cen, dirs, rad, wid, present)

    def violation(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The largest excess of any point over its label's ball radius or slab half-width."""
        if len(x) == 0:
            return 0.0
        z = x.reshape(len(x), -1) - self.centroid[y]
        over_ball = torch.linalg.vector_norm(z, dim=1) - self.radius[y]
        over_slab = (z * self.direction[y]).sum(1).abs() - self.width[y]
        return float(torch.maximum(over_ball, over_slab).clamp_min(0).max())

    def project(self, x: torch.Tensor, y: torch.Tensor, bounds: Bounds) -> torch.Tensor:
        """Into box ∩ ball(y) ∩ slab(y) for each point (rows of x, labels y): alternating projections,
        then the pull towards μ_y that makes ball and slab hold exactly (μ_y is in the box: it is an
        average of clean points, which are)."""
        shape = x.shape
        mu, v = self.centroid[y], self.direction[y]
        r, s = self.radius[y].unsqueeze(1), self.width[y].unsqueeze(1)
        for _ in range(_PROJECTION_ROUNDS):
            z = bounds.clamp(x).reshape(len(x), -1) - mu
            z = z * (r / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
            a = (z * v).sum(1, keepdim=True)
            z = z - (a - a.clamp(-s, s)) * v
            x = (mu + z).reshape(shape)
        z = bounds.clamp(x).reshape(len(x), -1) - mu
        t = torch.ones_like(r)
        t = torch.minimum(t, r / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-30))
        t = torch.minimum(t, s / (z * v).sum(1, keepdim=True).abs().clamp_min(1e-30))
        return bounds.clamp((mu + t * z).reshape(shape))

    def to_json(self) -> dict[str, Any]:
        return {"sphere_radius": self.radius.tolist(), "slab_half_width": self.width.tolist()}


# ---------------------------------------------------------------------------- the attack
@register_attack("i_min_max")
class IMinMax(Attack[IMinMaxConfig]):
    summary = ("improved min-max (Koh et al. 2022): greedily add the feasible point and label of highest loss "
               "under the defender's online model, which trains on D_tr ∪ the poisons so far")

    def check_supported(self, data: AttackData, victim: Victim) -> None:
        """Any victim whose loss has a gradient with respect to its (float) inputs: checked on one
        point with the untrained architecture (no training)."""
        check_input_gradient(data, victim, WHAT)

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool,
               cache: ArtifactCache | None = None) -> PoisonSet:
        cfg: IMinMaxConfig = self.config
        t0 = time.perf_counter()
        dtype = B.DTYPES[cfg.dtype]
        device = victim.device
        base = draw_seed(generator)
        N, C = len(data.train), data.num_classes
        # starting points: without replacement while D_tr lasts, so winners have distinct sources
        n_starts = n_poison * cfg.restarts
        perm = torch.cat([torch.randperm(N, generator=generator, device=generator.device)
                          for _ in range(math.ceil(n_starts / N))])[:n_starts]
        starts = perm.view(n_poison, cfg.restarts).to(device)  # uploaded once; the rounds index it there

        train = Dataset(data.train.x.to(device, dtype), data.train.y.to(device), C, data.train.name, data.bounds)
        bounds = data.bounds
        fol, w = B.Follower.from_model(victim.clean_model(), dtype)
        beta = cfg.follower_lr if cfg.follower_lr is not None else victim.spec.recipe.lr
        follower = B.follower_note(victim.spec.recipe, beta, WHAT, modelled=True)
        fopt = FollowerOptimizer.for_recipe(victim.spec.recipe, fol.step_sizes(beta))  # the recipe's optimiser
        bs = min(cfg.batch_size or victim.spec.recipe.batch_size or N, N)
        eps = n_poison / N

        feas = SphereSlab.fit(train, cfg.sphere_quantile, cfg.slab_quantile) if cfg.feasible == "sphere_slab" else None

        def project(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return bounds.clamp(x) if feas is None else feas.project(x, y, bounds)

        if cfg.labels == "max_loss":
            label_set = torch.arange(C, device=device)
            if feas is not None:
                label_set = label_set[feas.present]
        L = len(label_set) if cfg.labels == "max_loss" else 1

        n_val = min(len(data.val), 5000)
        val = Dataset(data.val.x[:n_val].to(device, dtype), data.val.y[:n_val].to(device), C)
        batches = _CleanBatches(N, bs, torch_generator(base, "i_min_max-batches"), device)

        xp = train.x.new_empty((n_poison, *train.input_shape))
        yp = torch.empty(n_poison, dtype=torch.int64, device=device)
        src = torch.empty(n_poison, dtype=torch.int64, device=device)  # src and losses stay on the device:
        chosen_loss = torch.empty(n_poison, device=device)  # no host sync per round
        rounds = math.ceil(n_poison / cfg.group_size)
        every = cfg.trace_every or max(1, rounds // 50)
        trace: list[list[float]] = []
        val_trace = [[0, fol.accuracy(w, val)]]
        bar = tqdm(range(rounds), desc="i_min_max", disable=not progress, unit="round")
        for r in bar:
            sl = slice(r * cfg.group_size, min(n_poison, (r + 1) * cfg.group_size))
            g = sl.stop - sl.start
            s = starts[sl]  # (g, restarts) indices into D_tr
            x0 = train.x[s.reshape(-1)]  # (g·R, *shape)
            y0 = train.y[s.reshape(-1)]
            if cfg.labels == "max_loss":
                x = x0.repeat_interleave(L, 0)
                y = label_set.repeat(g * cfg.restarts)
            else:
                x, y = x0.clone(), ((C - 1) - y0 if cfg.labels == "flip" else y0.clone())
                if feas is not None and not bool(feas.present[y].all()):
                    raise ConfigError(f"{WHAT}: labels {cfg.labels!r} give a class without clean points, which has no "
                                      "sphere/slab centroid; use labels 'max_loss' or feasible 'box'")
            x = project(x, y)
            for _ in range(cfg.steps):
                xv = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    lsum = F.cross_entropy(fol.logits(w, xv), y, reduction="sum")
                    grad = torch.autograd.grad(lsum, xv)[0]
                x = project(xv.detach() + cfg.step_size * grad.sign(), y)
            with torch.no_grad():
                loss = F.cross_entropy(fol.logits(w, x), y, reduction="none").view(g, cfg.restarts * L)
            best = loss.argmax(1)  # per poison: the candidate (start, label) of highest loss
            rows = torch.arange(g, device=device) * cfg.restarts * L + best
            xp[sl], yp[sl] = x[rows].detach(), y[rows]
            src[sl] = s.reshape(-1)[rows // L]
            chosen_loss[sl] = loss.gather(1, best[:, None]).squeeze(1).to(chosen_loss.dtype)

            # the defender: online gradient descent on D_tr ∪ the poisons chosen so far
            t = sl.stop
            lam = eps / (1.0 + eps) if cfg.weighting == "budget" else t / (N + t)
            px, py = xp[:t], yp[:t]
            for _ in range(cfg.follower_steps):
                idx = batches.next()
                cx, cy = train.x[idx], train.y[idx]
                def mixed(ws: Params, cx=cx, cy=cy, px=px, py=py, lam=lam) -> torch.Tensor:
                    return (1.0 - lam) * fol.loss(ws, cx, cy) + lam * fol.loss(ws, px, py)

                w = B.follower_steps(fopt, mixed, w, 1)
            if r % every == 0 or r == rounds - 1:
                trace.append([t, float(chosen_loss[sl].mean())])
                bar.set_postfix(loss=f"{trace[-1][1]:.3g}")
        val_trace.append([n_poison, fol.accuracy(w, val)])

        info: dict[str, Any] = {
            "rounds": rounds,
            "eps": eps,
            "chosen_loss_trace": trace,  # [poisons so far, mean loss of the round's chosen points under w_t]
            "chosen_loss_mean": float(chosen_loss.mean()),
            "label_counts": torch.bincount(yp.cpu(), minlength=C).tolist(),
            "online_val_accuracy": val_trace,  # [poisons so far, D_v accuracy of the defender's online model]
            "follower": follower,
            "feasible": cfg.feasible,
            "box_violation": bounds.violation(xp),
            "seconds": time.perf_counter() - t0,
        }
        if feas is not None:
            info.update(feas.to_json())
            info["sphere_slab_violation"] = feas.violation(xp, yp)
        return PoisonSet(xp.to("cpu", torch.float32), yp.cpu(), src.cpu(), info)


class _CleanBatches:
    """Shuffled mini-batches of D_tr indices, reshuffled every pass (seeded), drawn on ``device``
    (:func:`~poisonlab.seeding.device_generator`: on the CPU the same stream as ``generator``)."""

    def __init__(self, n: int, size: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.size, self.gen = n, size, device_generator(generator, device)
        self.perm, self.pos = torch.randperm(n, generator=self.gen, device=self.gen.device), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen, device=self.gen.device), 0
        out = self.perm[self.pos : self.pos + self.size]
        self.pos += self.size
        return out
