"""Pre-trained feature extractors (thesis chapter 4): SimCLR / supervised pre-training, a
safetensors cache, and feature inversion. The downstream victims (``linear_probe:<extractor>``,
``fine_tune:<extractor>``) live in :mod:`poisonlab.models.extractors`."""

from .invert import invert_features, relative_error
from .simclr import augment, nt_xent, train_simclr
from .store import PretrainConfig, get_extractor, pretrain_encoder, pretraining_images, save_extractor

__all__ = [
    "PretrainConfig",
    "augment",
    "get_extractor",
    "invert_features",
    "nt_xent",
    "pretrain_encoder",
    "pretraining_images",
    "relative_error",
    "save_extractor",
    "train_simclr",
]
