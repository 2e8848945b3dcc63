"""SparseLinear: an nn.Linear whose weight is multiplied through a fixed packed mask."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from ..amp import autocast_inputs
from ..ops import masked_linear, pack_mask, unpack_mask


class SparseLinear(nn.Linear):
    """nn.Linear with a fixed mask M: y = x·(W⊙M)ᵀ + b through ember.ops.masked_linear.

    The packed mask is a buffer (saved and loaded with the state dict); the gradients of masked
    weights are exactly zero. Masked weights are zero in everything the layer hands out, whatever
    order a model is pruned and initialized in (``reset_parameters``, an init function, a dense
    checkpoint loaded): ``state_dict`` (so torch.save, save_pretrained, checkpoints) and
    ``zero_pruned_`` zero them in place. The mask keeps its values through every move, to_empty
    included (from the meta device too). ``block``: the tile edge of a block mask (its matmuls
    skip empty tiles), None for a bitmask. Under autocast the matmul runs in autocast's dtype,
    as nn.Linear's does."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, block: int | None = None, device=None, dtype=None
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.block = block
        self._set_mask(torch.ones(out_features, in_features, dtype=torch.bool, device="cpu"))

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor, block: int | None = None) -> "SparseLinear":
        """A SparseLinear with linear's parameters (shared, not copied) and the bool mask."""
        if mask.shape != linear.weight.shape or mask.dtype != torch.bool or mask.is_meta:
            raise ValueError(
                f"SparseLinear.from_linear: mask must be bool of shape {tuple(linear.weight.shape)} with values (not on the meta device), got {mask.dtype} of shape {tuple(mask.shape)} on {mask.device}"
            )
        out = cls.__new__(cls)
        nn.Module.__init__(out)
        out.in_features, out.out_features, out.block = linear.in_features, linear.out_features, block
        out.weight, out.bias = linear.weight, linear.bias
        out._set_mask(mask)
        out.train(linear.training)
        out.zero_pruned_()
        return out

    def _set_mask(self, mask: torch.Tensor) -> None:
        """The bool mask, packed, as the `mask` buffer on the weight's device. On the meta device
        its values stay on the host too (_mask_values), for when to_empty materializes it."""
        packed = pack_mask(mask.cpu(), self.block)
        device = self.weight.device
        self.register_buffer("mask", packed.to(device))
        self._mask_values = packed if device.type == "meta" else None

    def _apply(self, fn, recurse=True):
        before = self.mask
        out = super()._apply(fn, recurse)
        if self.mask is not before:
            self._restore_mask(before)
        return out

    @torch.no_grad()
    def _restore_mask(self, before: torch.Tensor) -> None:
        """Module._apply made a new mask buffer: a move copies the values, but to_empty leaves
        uninitialized memory (and a meta mask has none); the new buffer gets the mask's values."""
        values = self._mask_values if before.is_meta else before
        if values is None:
            raise RuntimeError(
                "ember.sparse.SparseLinear: the mask is on the meta device and its values are unknown "
                "(a mask buffer assigned on the meta device); prune after materializing, or load a state dict"
            )
        if self.mask.is_meta:
            self._mask_values = values.cpu()
        else:
            self.mask.copy_(values)
            self._mask_values = None

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.zero_pruned_()  # a dense checkpoint's values behind the mask

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.zero_pruned_()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self._buffers.get("mask") is not None:  # nn.Linear.__init__ calls this before the mask exists
            self.zero_pruned_()

    def zero_pruned_(self) -> int:
        """Zero, in place, the masked weights that hold anything else (values an initialization
        left behind the mask); returns how many did (on a sharded weight: in this rank's shard)."""
        if self.mask.is_meta:
            return 0
        return zero_masked_(self.weight, self.dense_mask())

    def dense_mask(self) -> torch.Tensor:
        return unpack_mask(self.mask, self.weight.shape, self.block)

    def density(self) -> float:
        return self.dense_mask().float().mean().item()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, weight, bias = autocast_inputs(x, self.weight, self.bias)
        return masked_linear(x, weight, self.mask, bias, block=self.block)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block={self.block}"


@torch.no_grad()
def zero_masked_(weight: torch.Tensor, keep: torch.Tensor) -> int:
    """Zero the weights where the bool `keep` (of the full weight's shape) is False that hold
    anything else, NaN included; returns how many did (a sharded weight: in this rank's shard).
    Writes nothing when none does, so a weight a forward saved for its backward stays valid."""
    if weight.is_meta or keep.is_meta:
        return 0
    if isinstance(weight, DTensor):
        keep = distribute_tensor(keep, weight.device_mesh, weight.placements, src_data_rank=None).to_local()
        weight = weight.to_local()
    keep = keep.to(weight.device)
    stale = int(torch.count_nonzero(weight.masked_fill(keep, 0)))
    if stale:
        weight.masked_fill_(~keep, 0)
    return stale
