"""Losses: PRIOR token weights (the fused weighted cross-entropy kernels come with the
cross_entropy family)."""

from .prior import prior_token_weights

__all__ = ["prior_token_weights"]
