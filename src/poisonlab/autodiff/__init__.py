"""The one place for Hessian-vector products, conjugate gradient and implicit gradients."""

from .cg import CGResult, conjugate_gradient
from .hvp import dataset_hvp, hvp, mixed_vjp
from .implicit import InverseHVP, inverse_hvp, total_gradient
from .params import Params, flatten, loss_of_params, named_params, unflatten

__all__ = [
    "CGResult",
    "InverseHVP",
    "Params",
    "conjugate_gradient",
    "dataset_hvp",
    "flatten",
    "hvp",
    "inverse_hvp",
    "loss_of_params",
    "mixed_vjp",
    "named_params",
    "total_gradient",
    "unflatten",
]
