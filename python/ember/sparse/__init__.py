"""Sparse training: random pruning at initialization with ERK / ER / uniform layer-wise
densities, and SparseLinear layers whose masked matmuls skip what is pruned."""

from .densities import METHODS, densities_for_shapes, layerwise_densities, prunable_layers
from .linear import SparseLinear
from .prune import random_prune, sparsity_report, zero_pruned_

__all__ = [
    "METHODS",
    "SparseLinear",
    "densities_for_shapes",
    "layerwise_densities",
    "prunable_layers",
    "random_prune",
    "sparsity_report",
    "zero_pruned_",
]
