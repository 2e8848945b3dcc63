"""Losses: PRIOR token weights, and the fused linear + cross-entropy as a module."""

from .linear_ce import LinearCrossEntropyLoss
from .prior import prior_token_weights

__all__ = ["LinearCrossEntropyLoss", "prior_token_weights"]
