"""The training layer: configuration, the trainer, checkpoints, metrics, evaluation and scoring."""

from .config import Config, ConfigError, parse_config
from .preempt import EXIT_PREEMPTED, Preempted
from .trainer import TrainingError, train

__all__ = ["EXIT_PREEMPTED", "Config", "ConfigError", "Preempted", "TrainingError", "parse_config", "train"]
