"""Neural implicit representations: networks (`field`), training (`train`), checkpoints."""

from .field import Field, FourierMLP, Siren, build_network
from .stopping import OneStandardError
from .train import StoppingRule, TrainConfig, TrainState, ValidationPatience, fit, train
from . import checkpoint

__all__ = ["Field", "Siren", "FourierMLP", "build_network", "TrainConfig", "TrainState", "train", "fit",
           "StoppingRule", "ValidationPatience", "OneStandardError", "checkpoint"]
