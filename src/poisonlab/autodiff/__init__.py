"""The one place for Hessian-vector products, conjugate gradient and implicit gradients.

One functional convention (:mod:`poisonlab.autodiff.params`): every routine takes ``f(params, *args)``
with ``params`` a tuple of parameter tensors; :func:`functional_loss` / :func:`functional_model`
make such functions from an ``nn.Module``.
"""

from .cg import CGOptions, CGResult, conjugate_gradient, safeguarded_cg
from .hvp import GradientGraph, dataset_hvp, hvp, mixed_vjp
from .implicit import InverseHVP, inverse_hvp, total_gradient
from .params import Functional, Params, directional, flatten, functional_loss, functional_model, named_params, unflatten, value_and_grad

__all__ = [
    "CGOptions",
    "CGResult",
    "Functional",
    "GradientGraph",
    "InverseHVP",
    "Params",
    "conjugate_gradient",
    "dataset_hvp",
    "directional",
    "flatten",
    "functional_loss",
    "functional_model",
    "hvp",
    "inverse_hvp",
    "mixed_vjp",
    "named_params",
    "safeguarded_cg",
    "total_gradient",
    "unflatten",
    "value_and_grad",
]
