"""Model-poisoning reachability (Lu, Kamath & Yu, ICML 2023; thesis ch. 3): pure functions.

No training, no I/O: every function takes numbers or tensors (logits, labels, flattened gradients)
and returns numbers — except :func:`~poisonlab.theory.linear.as_linear_softmax`, the one bridge that
decides whether an ``nn.Module`` is a linear softmax model (the models the box conditions of
:mod:`poisonlab.theory.box` are about). Notation: ε = poison fraction of the clean set
(``fraction``), ρ = ε/(1+ε) the poison proportion of the mixed set, g(μ) the mean loss gradient at
the target w over the clean data, τ the threshold in ε-units (reachable needs ε ≥ τ).
"""

from .diagnostics import eps_of_rho, min_poison_count, mixed_gradient_norm, rho_of_eps
from .lambert import lambert_w
from .linear import as_linear_softmax, linear_softmax_names
from .margin import (
    MARGIN_LOSSES,
    MarginLoss,
    Reachability,
    binary_reachability,
    least_squares_reachability,
    margin_extremes,
    margin_statistic,
)
from .multiclass import (
    ce_lower_bound,
    multiclass_reachability,
    trace_statistic,
    univariate_check,
)

__all__ = [
    "MARGIN_LOSSES",
    "MarginLoss",
    "Reachability",
    "as_linear_softmax",
    "binary_reachability",
    "ce_lower_bound",
    "eps_of_rho",
    "lambert_w",
    "least_squares_reachability",
    "linear_softmax_names",
    "margin_extremes",
    "margin_statistic",
    "min_poison_count",
    "mixed_gradient_norm",
    "multiclass_reachability",
    "rho_of_eps",
    "trace_statistic",
    "univariate_check",
]
