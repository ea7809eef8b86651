"""Victim architectures and attacker generators."""

from .extractors import ENCODERS, ExtractorVictim, InputAdapter, load_extractor, split_head
from .generators import GENERATORS, ConvAutoencoder, FCAutoencoder, build_generator, default_generator_name
from .pretrained import efficientnet as _efficientnet  # noqa: F401  registers encoder "efficientnet_lite0" (ImageNet weights)
from .victims import CNN, MLP, VICTIMS, LogisticRegression, ResNet18, build_victim, resolve_victim

__all__ = [
    "CNN",
    "ENCODERS",
    "ExtractorVictim",
    "InputAdapter",
    "GENERATORS",
    "MLP",
    "VICTIMS",
    "ConvAutoencoder",
    "FCAutoencoder",
    "LogisticRegression",
    "ResNet18",
    "build_generator",
    "build_victim",
    "load_extractor",
    "resolve_victim",
    "split_head",
    "default_generator_name",
]
