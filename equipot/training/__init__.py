"""Training: YAML config with dotted overrides, the training loop, losses, metrics, evaluation.

::

    from equipot.training import load_config, train
    config = load_config("config.yaml", ["model.hidden=32", "train.lr=1e-3"])
    summary = train(config)
"""
from .config import (
    Config,
    DataSection,
    ModelSection,
    TrainSection,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from .evaluate import Evaluation, evaluate
from .losses import LossWeights
from .metrics import ErrorStats, read_metrics
from .trainer import Trainer, resume_config, train

__all__ = [
    "Config",
    "DataSection",
    "ErrorStats",
    "Evaluation",
    "LossWeights",
    "ModelSection",
    "TrainSection",
    "Trainer",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "load_config",
    "read_metrics",
    "resume_config",
    "save_config",
    "train",
]
