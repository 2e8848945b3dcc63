"""Layer-wise densities for random pruning ("The Unreasonable Effectiveness of Random Pruning",
Liu et al. 2022, following RigL's ERK).

ERK: the density of layer l is ε·(Σ shape_l)/(Π shape_l) (kernel dimensions of a conv weight
included), one ε for all layers, solved so that the kept weights total (1 − sparsity) of all
prunable weights; while some layer's density would exceed 1, the layer with the largest raw
density is made dense and ε re-solved over the rest. ER: the same with (n_in + n_out)/(n_in·n_out).
uniform: every layer at 1 − sparsity. uniform_plus: uniform, but the first prunable layer stays
dense and the last keeps at least 20 % of its weights.
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

METHODS = ("erk", "er", "uniform", "uniform_plus")


def prunable_layers(model: nn.Module, include_embeddings: bool = False) -> dict[str, nn.Module]:
    """{qualified name: module} of the layers random pruning touches, in model order: Linear and
    Conv weights (and Embeddings when asked); never biases or norms. Nor a layer whose mask would
    not hold: an nn.MultiheadAttention's out_proj (attention reads its weight directly, never
    through its forward; its in_proj_weight is no layer either), and a layer whose weight another
    module shares (a head tied to the embedding: the embedding's gradient would revive what the
    mask prunes, and zeroing them in state_dict would wipe the embedding's values)."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d) + ((nn.Embedding,) if include_embeddings else ())
    users = Counter(id(w) for m in model.modules() if isinstance(w := getattr(m, "weight", None), torch.Tensor))
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, kinds)
        and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)
        and users[id(m.weight)] == 1
    }


def _raw_density(shape: tuple[int, ...], method: str) -> float:
    if method == "er":
        n_out, n_in = shape[0], shape[1]
        return (n_in + n_out) / (n_in * n_out)
    return sum(shape) / math.prod(shape)


def densities_for_shapes(shapes: dict[str, tuple[int, ...]], sparsity: float, method: str = "erk") -> dict[str, float]:
    """{name: density} for weights of the given shapes (in layer order)."""
    if method not in METHODS:
        raise ValueError(f"ember.sparse: method must be one of {METHODS}, got {method!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"ember.sparse: sparsity must be in [0, 1), got {sparsity}")
    names = list(shapes)
    density = 1.0 - sparsity
    if method == "uniform":
        return {n: density for n in names}
    if method == "uniform_plus":
        out = {n: density for n in names}
        if names:
            out[names[-1]] = max(density, 0.2)
            out[names[0]] = 1.0
        return out
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: _raw_density(s, method) for n, s in shapes.items()}
    total = sum(numel.values())
    dense: set[str] = set()
    while True:
        rest = [n for n in names if n not in dense]
        budget = density * total - sum(numel[n] for n in dense)
        divisor = sum(raw[n] * numel[n] for n in rest)
        eps = budget / divisor if divisor > 0 else 0.0
        over = [n for n in rest if eps * raw[n] > 1.0]
        if not over:
            break
        top = max(raw[n] for n in over)
        dense.update(n for n in over if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in names}


def layerwise_densities(
    model: nn.Module, sparsity: float, method: str = "erk", include_embeddings: bool = False
) -> dict[str, float]:
    """{layer name: density} for the model's prunable layers (see the module docstring)."""
    layers = prunable_layers(model, include_embeddings)
    return densities_for_shapes({n: tuple(m.weight.shape) for n, m in layers.items()}, sparsity, method)
