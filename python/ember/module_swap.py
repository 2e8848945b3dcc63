"""Swapping one submodule of a model for another by its dotted name (used by random_prune,
convert_to_float8_training and ember.patch)."""

from torch import nn


def replace_module(model: nn.Module, fqn: str, new: nn.Module) -> None:
    """model's submodule at ``fqn`` ("layers.0.mlp.up") becomes ``new``."""
    parent, _, child = fqn.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
