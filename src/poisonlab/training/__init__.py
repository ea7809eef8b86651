"""The one training loop, evaluation, and the victim spec."""

from .loop import BatchLoss, TrainConfig, accuracy, mean_loss, predict_logits, resolve_device, train
from .probe import check_victim
from .victim import Victim, VictimSpec

__all__ = ["BatchLoss", "TrainConfig", "Victim", "VictimSpec", "accuracy", "check_victim", "mean_loss", "predict_logits",
           "resolve_device", "train"]
