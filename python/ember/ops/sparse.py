"""sparse ops: mask packing and masked_linear (y = x·(W⊙M)ᵀ + b) with its gradients.

Masks (include/ember/sparse.h): a bitmask packs 1 bit per weight (int32 words, 32 per row
chunk); a block mask keeps whole block×block tiles (one uint8 per tile) and its matmuls skip the
empty tiles in the forward, dX and dW.
"""

from __future__ import annotations

import math

import torch

from .. import kernels
from . import reference_path
from .fake import register_fake
from .forward_ad import refuse_forward_ad

_BLOCKS = (16, 32, 64, 128)


def _block(op: str, block: int | None) -> int:
    if block is None:
        return 0
    if block not in _BLOCKS:
        raise ValueError(f"ember.ops.{op}: block must be 16, 32, 64 or 128 (or None for a bitmask), got {block!r}")
    return block


def pack_mask(mask: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """mask (a bool tensor of the weight's shape) -> packed: int32 bitmask (rows, ceil(cols/32))
    for block=None, else uint8 per tile (ceil(rows/block), ceil(cols/block)); a block mask must
    be constant on each tile."""
    return torch.ops.ember.pack_mask(mask, _block("pack_mask", block))


def unpack_mask(packed: torch.Tensor, shape, block: int | None = None) -> torch.Tensor:
    """The bool mask of a weight of `shape` from its packed form."""
    rows, cols = shape
    return torch.ops.ember.unpack_mask(packed, rows, cols, _block("unpack_mask", block))


def masked_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """y = x·(W⊙M)ᵀ + bias for x (..., in), W (out, in). mask: packed (pack_mask; give its block
    for a block mask) or a bool tensor of W's shape (packed here as a bitmask). dW is (gᵀ·x)⊙M:
    masked weights get exactly zero gradient.

    Pruned weights are never read and count as +0: every path (bitmask or block mask, CPU or
    CUDA) equals an IEEE matmul with where(mask, weight, 0). NaN or inf stored in a pruned weight
    never reaches y, dx or dw; a non-finite element of x (of the gradient, for dx) times a pruned
    +0 is NaN, as in the dense matmul, also where a block mask skips the tile."""
    b = _block("masked_linear", block)
    refuse_forward_ad("masked_linear", x, weight, bias)
    if mask.dtype == torch.bool:
        if mask.shape != weight.shape:  # (packed, it would be named as an int32 mask never passed)
            raise ValueError(
                f"ember.ops.masked_linear: a bool mask must have weight's shape {tuple(weight.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        mask, b = pack_mask(mask), 0
    if kernels.disabled("sparse.block_gemms" if b else "sparse.bitmask_tiled"):  # (the kernels' own fallback)
        return reference_path.masked_linear(x, weight, mask, bias, b)
    rows = math.prod(x.shape[:-1])  # not reshape(-1, in): ambiguous when in == 0
    y = torch.ops.ember.masked_linear(x.reshape(rows, x.shape[-1]), weight, mask, b, bias)
    return y.view(*x.shape[:-1], weight.shape[0])


@register_fake("ember::pack_mask")
def _pack_fake(mask, block):
    rows, cols = mask.shape
    if block == 0:
        return mask.new_empty((rows, (cols + 31) // 32), dtype=torch.int32)
    return mask.new_empty(((rows + block - 1) // block, (cols + block - 1) // block), dtype=torch.uint8)


@register_fake("ember::unpack_mask")
def _unpack_fake(packed, rows, cols, block):
    return packed.new_empty((rows, cols), dtype=torch.bool)


@register_fake("ember::masked_linear")
def _masked_linear_fake(x, weight, mask, block, bias):
    return x.new_empty((x.shape[0], weight.shape[0]))


@register_fake("ember::masked_linear_backward")
def _masked_linear_backward_fake(grad, x, weight, mask, block, need_x, need_w):
    return (
        torch.empty_like(x) if need_x else x.new_empty((0,)),
        torch.empty_like(weight) if need_w else weight.new_empty((0,)),
    )


def _setup(ctx, inputs, output):
    x, weight, mask, block, bias = inputs
    ctx.save_for_backward(x, weight, mask)
    ctx.block, ctx.has_bias = block, bias is not None


def _backward(ctx, grad):
    x, weight, mask = ctx.saved_tensors
    if torch.is_grad_enabled() and any(t.requires_grad for t in (grad, x, weight)):  # create_graph=True
        raise RuntimeError(
            "ember.ops.masked_linear: no second derivative (a backward with create_graph=True through a "
            "SparseLinear or masked_linear: double backward, gradient penalties, Hessian-vector products)"
        )
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dx = dw = None
    if need_x or need_w:
        dx, dw = torch.ops.ember.masked_linear_backward(grad.contiguous(), x, weight, mask, ctx.block, need_x, need_w)
    db = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[4] else None
    return (dx if need_x else None), (dw if need_w else None), None, None, db


torch.library.register_autograd("ember::masked_linear", _backward, setup_context=_setup)
