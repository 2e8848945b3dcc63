"""Random pruning at initialization: exact-count random masks at layer-wise densities."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from ..module_swap import replace_module
from .densities import layerwise_densities, prunable_layers
from .linear import SparseLinear, zero_masked_


def _random_mask(shape, density: float, block: int | None, generator: torch.Generator) -> torch.Tensor:
    """A bool mask keeping round(density·numel) weights, or whole tiles to within one tile of it."""
    rows, cols = shape[0], math.prod(shape[1:])
    if block is None:
        keep = round(density * rows * cols)
        flat = torch.zeros(rows * cols, dtype=torch.bool)
        flat[torch.randperm(rows * cols, generator=generator)[:keep]] = True
        return flat.view(shape)
    rb, cb = -(-rows // block), -(-cols // block)
    # Tiles in random order; a tile is kept while it brings the kept count closer to the target
    # (edge tiles are smaller), so the count ends within one tile of round(density·numel).
    target = round(density * rows * cols)
    sizes = [min(block, rows - i * block) * min(block, cols - j * block) for i in range(rb) for j in range(cb)]
    tiles = torch.zeros(rb * cb, dtype=torch.bool)
    total = 0
    for t in torch.randperm(rb * cb, generator=generator).tolist():
        if abs(total + sizes[t] - target) < abs(total - target):
            tiles[t] = True
            total += sizes[t]
    full = tiles.view(rb, cb).repeat_interleave(block, 0).repeat_interleave(block, 1)
    return full[:rows, :cols].reshape(shape)


def draw_masks(
    model: nn.Module,
    sparsity: float,
    method: str = "erk",
    block: int | None = None,
    seed: int = 0,
    include_embeddings: bool = False,
) -> dict[str, torch.Tensor]:
    """The bool masks random_prune applies, by layer name (on the CPU; from shapes alone, so a
    model on the meta device works). Reproducible from `seed`."""
    _check_block("draw_masks", block)
    densities = layerwise_densities(model, sparsity, method, include_embeddings)
    g = torch.Generator().manual_seed(seed)
    return {
        name: _random_mask(
            tuple(module.weight.shape), densities[name], block if isinstance(module, nn.Linear) else None, g
        )
        for name, module in prunable_layers(model, include_embeddings).items()
    }


def random_prune(
    model: nn.Module,
    sparsity: float,
    method: str = "erk",
    block: int | None = None,
    seed: int = 0,
    include_embeddings: bool = False,
    masks: dict[str, torch.Tensor] | None = None,
) -> dict:
    """Prune `model` in place at random: every Linear becomes a SparseLinear holding its mask
    (block masks when `block` is given), other prunable layers (Conv) get a plain weight mask
    (a `weight_mask` buffer, the weight zeroed and its gradient masked). Densities per layer from
    layerwise_densities(model, sparsity, method). Reproducible from `seed`; `masks` (from
    draw_masks) skips the drawing. Returns the report (sparsity_report of the pruned model,
    plus the method and target). Refused, before anything changes: a bad block, masks that miss a
    layer or have another shape, and a model already pruned (its masks are fixed: a second draw
    would revive what the first pruned)."""
    _check_block("random_prune", block)
    layers = prunable_layers(model, include_embeddings)
    if not layers and sparsity > 0:  # (a bad sparsity is named by the densities' check)
        raise ValueError(
            f"ember.sparse.random_prune: {type(model).__name__} has no layer to prune (nn.Linear, nn.Conv1d/2d/3d"
            f"{', nn.Embedding' if include_embeddings else ''}, not tied nor attention's out_proj): nothing would change"
        )
    if "" in layers:
        raise ValueError(
            f"ember.sparse.random_prune: pass the module holding the {type(model).__name__}, not the layer itself"
        )
    _check_prunable(layers)
    masks = masks if masks is not None else draw_masks(model, sparsity, method, block, seed, include_embeddings)
    for name, module in layers.items():
        _check_mask(name, masks.get(name), tuple(module.weight.shape))
    for name, module in layers.items():
        mask = masks[name]
        if isinstance(module, nn.Linear):
            replace_module(model, name, SparseLinear.from_linear(module, mask, block))
        else:
            module.register_buffer("weight_mask", mask.to(module.weight.device))
            module.register_forward_pre_hook(_masked_conv)
            _masked_conv(module, ())
    report = sparsity_report(model, masks)
    report.update(method=method, target_sparsity=sparsity, block=block, seed=seed)
    return report


def _check_block(fn: str, block) -> None:
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block not in (16, 32, 64, 128)):
        raise ValueError(f"ember.sparse.{fn}: block must be 16, 32, 64 or 128 (or None for a bitmask), got {block!r}")


def _check_mask(name: str, mask, shape: tuple) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != shape or mask.is_meta:
        got = f"{mask.dtype} of shape {tuple(mask.shape)} on {mask.device}" if isinstance(mask, torch.Tensor) else mask
        raise ValueError(
            f"ember.sparse.random_prune: masks[{name!r}] must be a bool tensor of shape {shape} with values, got {got}"
        )


def _check_prunable(layers: dict[str, nn.Module]) -> None:
    """A model already pruned (its masks are fixed: a second draw would revive what the first
    pruned), and Linear subclasses with a forward of their own, which a SparseLinear would drop."""
    pruned = [name for name, m in layers.items() if _holds_a_mask(m)]
    if pruned:
        raise ValueError(
            f"ember.sparse.random_prune: the model is already pruned (layers {', '.join(pruned[:4])}"
            f"{', ...' if len(pruned) > 4 else ''} hold masks); prune a dense model"
        )
    own = [
        f"{name} ({type(m).__name__})"
        for name, m in layers.items()
        if isinstance(m, nn.Linear) and type(m) is not nn.Linear and not isinstance(m, SparseLinear)
    ]
    if own:
        raise ValueError(
            f"ember.sparse.random_prune: {', '.join(own[:4])}{', ...' if len(own) > 4 else ''} subclass nn.Linear "
            "with a forward of their own, which a SparseLinear would replace (Float8Linear: float8 and sparsity "
            "cannot be combined); prune the model before converting its layers"
        )


def _holds_a_mask(module: nn.Module) -> bool:
    """Whether random_prune already masked some of the layer's weights (a SparseLinear built with
    its all-ones mask is dense: pruning it is its first draw; a mask on the meta device is unknown)."""
    if isinstance(module, SparseLinear):
        return not module.mask.is_meta and not bool(module.dense_mask().all())
    mask = getattr(module, "weight_mask", None)
    return isinstance(mask, torch.Tensor) and not mask.is_meta and not bool(mask.all())


def _masked_conv(module: nn.Module, args) -> None:
    """Before a pruned conv runs: zeros behind its mask (what an initialization put there since),
    and the hook that masks its weight's gradient, on the weight the module holds now (a copy of
    the module, pickled or deep-copied, has a new weight without the hook)."""
    zero_masked_(module.weight, module.weight_mask)
    if module.__dict__.get("_ember_masked_grad_of") != id(module.weight):
        module.weight.register_hook(functools.partial(_masked_grad, module))
        module._ember_masked_grad_of = id(module.weight)


def _masked_grad(module: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    return grad * module.weight_mask  # the buffer: it moves with the module


def zero_pruned_(model: nn.Module) -> int:
    """Zero, in place, every pruned weight of `model` that holds anything else: what an
    initialization after random_prune (init_weights, reset_parameters, model.apply(init),
    to_empty) leaves behind the masks. SparseLinear layers do it themselves in state_dict;
    exporters that read parameters directly (ember.models.to_hf, ember.patch.unpatch) call this.
    Returns how many weights were zeroed."""
    stale = 0
    for m in model.modules():
        if isinstance(m, SparseLinear):
            stale += m.zero_pruned_()
        elif isinstance(getattr(m, "weight_mask", None), torch.Tensor):
            stale += zero_masked_(m.weight, m.weight_mask)
    return stale


def sparsity_report(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> dict:
    """Per prunable layer: shape, density (kept / weights), kept parameters and FLOPs kept per
    input row (2·kept for a Linear; per output position for a Conv); and the totals. Works for
    any model: layers without a mask count their nonzero weights; `masks` (by layer name) are
    counted instead of the model's own (a model on the meta device). `nonzero`: the weight's
    actual nonzero values, pruned positions included (values an initialization left behind a
    mask, which the layer never uses and zero_pruned_ / state_dict zero); None on the meta device
    or for a sharded weight."""
    layers, total, kept, nonzero = [], 0, 0, 0
    for name, m in prunable_layers(model).items():
        if masks is not None and name in masks:
            mask = masks[name]
        elif isinstance(m, SparseLinear):
            mask = m.dense_mask()
        elif hasattr(m, "weight_mask"):
            mask = m.weight_mask
        else:
            mask = m.weight.detach() != 0
        n, k = mask.numel(), int(mask.sum())
        w = m.weight
        nz = None if w.is_meta or isinstance(w, DTensor) else int(torch.count_nonzero(w.detach()))
        layers.append(
            {"name": name, "shape": tuple(w.shape), "density": k / n, "params": k, "flops": 2 * k, "nonzero": nz}
        )
        total, kept = total + n, kept + k
        nonzero = None if nonzero is None or nz is None else nonzero + nz
    return {
        "layers": layers,
        "params_total": total,
        "params_kept": kept,
        "density": kept / total if total else 1.0,
        "flops_kept": 2 * kept,
        "flops_total": 2 * total,
        "params_nonzero": nonzero,
    }
