"""Training: YAML config with dotted overrides, the training loop, losses, metrics, evaluation.

::

    from equipot.training import load_config, train
    config = load_config("config.yaml", ["model.hidden=32", "train.lr=1e-3"])
    summary = train(config)
"""
from .config import (
    Config,
    DataSection,
    TrainSection,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    resume_config,
    save_config,
)
from .evaluate import Evaluation, evaluate
from .losses import LossWeights
from .metrics import ErrorStats, read_metrics
from .model_from_data import model_from_data
from .trainer import Trainer, train

__all__ = [
    "Config",
    "DataSection",
    "ErrorStats",
    "Evaluation",
    "LossWeights",
    "TrainSection",
    "Trainer",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "load_config",
    "model_from_data",
    "read_metrics",
    "resume_config",
    "save_config",
    "train",
]
