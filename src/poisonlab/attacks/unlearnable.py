"""Unlearnable examples: sample-wise error-minimising noise (Huang et al. 2021, "Unlearnable
Examples: Making Personal Data Unexploitable"), adapted to the additive protocol and to victims on a
fixed feature extractor (thesis chapter 4).

Threat model: clean-label. The attacker picks ε·N training points (seeded, distinct) and adds
copies x + δ with their true labels — or, when the run's ``injection`` is "replace", releases
x + δ *in place of* x (the paper's setting, at fraction 1 every training image) — where δ solves the
bi-level *min-min* problem

    min_θ  E [ min_δ  ℓ(f_θ(x + δ), y) ]      s.t.  x + δ ∈ bounds,  ||δ||_∞ ≤ radius

alternating (i) ``train_epochs`` epochs of the victim's recipe on the training set the test stage
will use (``PoisonedDataset.mix`` with ``data.injection``: D_tr ∪ {x + δ}, or D_tr with x + δ in
place of x; THE training loop)
and (ii) ``pgd_steps`` signed-gradient steps on δ that *decrease* the loss, until the surrogate
classifies ≥ ``stop_accuracy`` % of the perturbed points correctly or ``rounds`` is reached.
The surrogate is the victim's own spec (for ``linear_probe:<extractor>`` only the head learns, so
the noise must act through the frozen features). ``radius=None`` removes the L∞ constraint.
``bounds`` are the data's (``data.bounds``: pixels in [0, 1] for images, per-feature ranges for
tabular data); ``radius`` and ``step_size`` are in the data's units. Any victim module works, on
inputs of any shape; the surrogate trains with the victim's own recipe (THE training loop).

Defaults at the protocol's ε = 3 % drop nothing, by design, with ``--injection add`` and with
``replace`` (measured on digits LR: docs/studies/attack-defaults.md). Error-minimising
noise makes its own points *easy*, so they add almost no gradient, and the other 97 % of D_tr teach
the victim as before. The paper's setting protects (nearly) every training image:
``--fraction 1 --injection replace``.

Shapes: x, δ (n, *input_shape).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..cache import ArtifactCache
from ..data.types import AttackData, PoisonedDataset, PoisonSet
from ..errors import ConfigError
from ..seeding import child_generator
from ..training import train
from ..training.victim import Victim
from ..validation import check_int, check_number, check_radius
from ._radius import project
from .base import Attack, AttackConfig, register_attack

WHAT = "attack 'unlearnable'"


@dataclass(frozen=True, kw_only=True)
class UnlearnableConfig(AttackConfig):
    """Options of :class:`Unlearnable` (see the module docstring).

    Attributes:
        radius: The L∞ bound on δ, in the data's units (the paper's 8/255 for pixels in [0, 1]);
            null: unconstrained (only the data's bounds). Default 8/255.
        rounds: Alternations of surrogate training and noise steps, at most (an integer >= 1).
            Default 10.
        train_epochs: Epochs of the victim's recipe on the surrogate per round (0: the surrogate is
            never trained). Default 1.
        pgd_steps: Signed-gradient steps on δ per round, each decreasing the loss. Default 20.
        step_size: The signed step, in the data's units; null: radius/5, or 0.05 when unconstrained.
            Default null.
        stop_accuracy: Stop once the surrogate classifies this percentage of the perturbed points
            correctly (in [0, 100]). Default 99.0.
    """

    radius: float | None = 8 / 255
    rounds: int = 10
    train_epochs: int = 1
    pgd_steps: int = 20
    step_size: float | None = None
    stop_accuracy: float = 99.0

    def __post_init__(self) -> None:
        check_radius(self.radius, WHAT)
        for key in ("rounds", "pgd_steps"):
            check_int(getattr(self, key), key, WHAT)
        check_int(self.train_epochs, "train_epochs", WHAT, minimum=0)
        if self.step_size is not None:
            check_number(self.step_size, "step_size", WHAT)
        if isinstance(self.stop_accuracy, bool) or not isinstance(self.stop_accuracy, (int, float)) \
                or not 0 <= self.stop_accuracy <= 100:
            raise ConfigError(f"{WHAT}: stop_accuracy must be a number in [0, 100], got {self.stop_accuracy!r}")


@register_attack("unlearnable")
class Unlearnable(Attack[UnlearnableConfig]):
    clean_label = True
    summary = "error-minimising noise (Huang et al. 2021) on ε·N copies, optional L∞ radius"

    def _craft(self, data: AttackData, victim: Victim, n_poison: int, *, generator: torch.Generator, progress: bool,
               cache: ArtifactCache | None = None) -> PoisonSet:
        cfg = self.config
        step = cfg.step_size or (cfg.radius / 5 if cfg.radius is not None else 0.05)
        src = torch.randperm(len(data.train), generator=generator, device=generator.device)[:n_poison]
        device = victim.device
        clean = data.train.to(device)  # once: every round's training set is built on the device
        x0 = data.train.x[src].to(device)
        y = data.train.y[src].to(device)
        x = x0.clone()
        model = victim.spec.build(victim.seed)
        recipe = victim.spec.recipe
        batch_gen = child_generator(generator)
        acc, rounds = 0.0, 0
        for _ in tqdm(range(cfg.rounds), desc="unlearnable", disable=not progress, leave=False):
            rounds += 1  # the rounds run (the loop may stop early)
            if cfg.train_epochs:
                mixed = PoisonedDataset.mix(clean, PoisonSet(x.detach(), y, src), data.injection).dataset
                train(model, mixed, replace(recipe, epochs=cfg.train_epochs), batch_gen)
            model.eval()
            for _ in range(cfg.pgd_steps):
                x.requires_grad_(True)
                loss = F.cross_entropy(model(x), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = project(x - step * grad.sign(), x0, cfg.radius, data.bounds)
            with torch.no_grad():
                acc = 100.0 * (model(x).argmax(1) == y).double().mean().item()  # one sync per round: the stop rule
            if acc >= cfg.stop_accuracy:
                break
        with torch.no_grad():
            clean_loss = F.cross_entropy(model(x0), y).item()
            noisy_loss = F.cross_entropy(model(x), y).item()
        info = {"rounds": rounds, "surrogate_accuracy_on_poisons": acc, "surrogate_loss_clean_sources": clean_loss,
                "surrogate_loss_poisons": noisy_loss, "radius": cfg.radius}
        return PoisonSet(x.detach().cpu(), y.cpu(), src, info)
