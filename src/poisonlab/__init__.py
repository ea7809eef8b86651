"""poisonlab: a toolkit for studying what untrusted training data does to ML models.

Layers (imports point downward only)::

    data -> models -> training -> autodiff -> attacks / defenses / theory
         -> protocol -> sweeps -> reporting -> cli
"""

__version__ = "0.1.0"
