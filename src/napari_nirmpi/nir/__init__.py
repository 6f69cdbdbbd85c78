"""Neural implicit representations: networks (`field`), settings (`config`), the rows and units
training sees (`data`), the sub-voxel operator D (`operators`), training (`train`: `fit` and the
`train` generator), iterate selection and stopping rules (`stopping`), checkpoints (`checkpoint`)."""

from .config import ExperimentalConfig, FeatureGridConfig, TrainConfig
from .field import FeatureGrid, Field, FourierMLP, Siren, build_network
from .stopping import OneStandardError, StoppingRule, ValidationPatience
from .train import TrainState, fit, train
from . import checkpoint

__all__ = ["Field", "Siren", "FourierMLP", "FeatureGrid", "FeatureGridConfig", "build_network", "TrainConfig", "ExperimentalConfig", "TrainState",
           "train", "fit", "StoppingRule", "ValidationPatience", "OneStandardError", "checkpoint"]
