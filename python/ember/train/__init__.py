"""The training layer: configuration, the trainer, checkpoints, metrics, evaluation and scoring."""

from .config import Config, ConfigError, parse_config
from .trainer import TrainingError, train

__all__ = ["Config", "ConfigError", "TrainingError", "parse_config", "train"]
