"""SparseLinear: an nn.Linear whose weight is multiplied through a fixed packed mask."""

from __future__ import annotations

import torch
from torch import nn

from ..ops import masked_linear, pack_mask, unpack_mask


class SparseLinear(nn.Linear):
    """nn.Linear with a fixed mask M: y = x·(W⊙M)ᵀ + b through ember.ops.masked_linear.

    The packed mask is a buffer (saved and loaded with the state dict); masked weights are zero
    from the start and their gradients are exactly zero, so they stay zero under any optimizer
    whose update is zero where the gradient is (SGD, AdamW, ember's Apollo). ``block``: the tile
    edge of a block mask (its matmuls skip empty tiles), None for a bitmask."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, block: int | None = None, device=None, dtype=None
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.block = block
        full = torch.ones(out_features, in_features, dtype=torch.bool, device=self.weight.device)
        self.register_buffer("mask", pack_mask(full, block))

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor, block: int | None = None) -> "SparseLinear":
        """A SparseLinear with linear's parameters (shared, not copied) and the bool mask."""
        if mask.shape != linear.weight.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"SparseLinear.from_linear: mask must be bool of shape {tuple(linear.weight.shape)}, got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.in_features, out.out_features, out.block = linear.in_features, linear.out_features, block
        out.weight, out.bias = linear.weight, linear.bias
        out.register_buffer("mask", pack_mask(mask.to(linear.weight.device), block))
        with torch.no_grad():
            out.weight.mul_(mask.to(out.weight.device, out.weight.dtype))
        return out

    def dense_mask(self) -> torch.Tensor:
        return unpack_mask(self.mask, self.weight.shape, self.block)

    def density(self) -> float:
        return self.dense_mask().float().mean().item()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_linear(x, self.weight, self.mask, self.bias, block=self.block)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block={self.block}"
