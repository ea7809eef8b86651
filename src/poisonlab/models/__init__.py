"""Victim architectures and attacker generators."""

from .generators import GENERATORS, ConvAutoencoder, FCAutoencoder, build_generator, default_generator_name
from .victims import VICTIMS, CNN, MLP, LogisticRegression, ResNet18, build_victim

__all__ = [
    "CNN",
    "GENERATORS",
    "MLP",
    "VICTIMS",
    "ConvAutoencoder",
    "FCAutoencoder",
    "LogisticRegression",
    "ResNet18",
    "build_generator",
    "build_victim",
    "default_generator_name",
]
