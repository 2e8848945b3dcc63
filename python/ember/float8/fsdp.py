"""fp8 all-gather under FSDP2: Float8Linear weights travel between ranks as fp8 codes and scales.

FSDP2's extension point: when the local tensor of a sharded parameter defines
``fsdp_pre_all_gather`` / ``fsdp_post_all_gather``, FSDP2 all-gathers what the first returns and
builds the unsharded parameter from the gathered tensors with the second. The local shard of a
Float8Linear weight becomes a Float8ShardedWeight (ember.float8.enable_fp8_all_gather, before
fully_shard);
it quantizes its rows exactly as Float8Linear would quantize the full weight, so the gathered
Float8GatheredWeight holds the fp8 operand of the forward GEMM, which Float8Linear uses as is:

recipe       sent per shard                     forward   dgrad (Wᵀ)
tensorwise   codes (scale from the global amax) exact     exact: the transposed codes, same scale
rowwise      codes + one scale per row          exact     approximate: the gathered rows
                                                          dequantized, requantized per column
blockwise    codes + one scale per 128×128 tile exact     exact: tiles are transpose-symmetric
plain        the weight in its dtype (fallback) as without all-gather

The tensorwise scale needs the amax of the whole weight: one all-reduce(MAX) of a scalar per
weight and all-gather; any split of the rows works (a short last shard is padded with zero rows,
which change no amax). Blockwise needs each shard's rows to be a multiple of 128 (the tiles must
not straddle ranks) and rowwise an even split of the rows (FSDP2 requires every all-gather input
of a short shard to have the padded shard's shape, which the scales do not); otherwise that
weight falls back to the plain all-gather, logged once (logger "ember.float8"). Under a
MixedPrecisionPolicy the shard is cast to its param_dtype first, as FSDP2 would before gathering.

Everything else sees the weight's dtype: ops on a Float8ShardedWeight run on the plain tensor it
wraps and return plain tensors (the optimizer's state, gradients), except the few that FSDP2 and
``to_empty`` use to shard, pad and materialize it; in-place ops (the optimizer step, loading a
checkpoint) write the wrapped tensor. Float8Linear's state dict holds plain tensors (a hook
unwraps the local shard), so checkpoints are those of a run without fp8 all-gather.
"""

import functools
import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map_only

from ..ops import quantize_fp8
from .reference import expand_scale

log = logging.getLogger("ember.float8")
E4M3 = torch.float8_e4m3fn
TILE = 128  # the blockwise recipe's weight tile
_aten = torch.ops.aten
# the ops that shard, pad, move and materialize a parameter keep the wrapper; all others unwrap
_KEEP = {
    _aten.view.default,
    _aten._unsafe_view.default,
    _aten.as_strided.default,
    _aten.slice.Tensor,
    _aten.split.Tensor,
    _aten.split_with_sizes.default,
    _aten.new_zeros.default,
    _aten.new_empty.default,
    _aten.new_empty_strided.default,
    _aten.empty_like.default,
    _aten.detach.default,
    _aten.alias.default,
    _aten.clone.default,
    _aten._to_copy.default,
}


class Float8ShardedWeight(torch.Tensor):
    """The local shard of a Float8Linear weight (``data``, plain, the param dtype) under FSDP2,
    all-gathered in fp8 for ``recipe``."""

    @staticmethod
    def __new__(cls, data: torch.Tensor, recipe: str):
        return torch.Tensor._make_wrapper_subclass(
            cls,
            data.size(),
            strides=data.stride(),
            storage_offset=data.storage_offset(),
            dtype=data.dtype,
            layout=data.layout,
            device=data.device,
            requires_grad=data.requires_grad,
        )

    def __init__(self, data: torch.Tensor, recipe: str):
        self._data = data
        self._recipe = recipe

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self):
        return f"Float8ShardedWeight(recipe={self._recipe}, {self._data!r})"

    def __tensor_flatten__(self):
        return ["_data"], self._recipe

    @staticmethod
    def __tensor_unflatten__(inner, recipe, outer_size, outer_stride):
        return Float8ShardedWeight(inner["_data"], recipe)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        recipe = next(t._recipe for t in tree_leaves((args, kwargs)) if isinstance(t, cls))
        plain_args, plain_kwargs = tree_map_only(cls, lambda t: t._data, (args, kwargs or {}))
        out = func(*plain_args, **plain_kwargs)
        if func in _KEEP:
            return tree_map_only(torch.Tensor, lambda t: cls(t, recipe), out)
        if func._schema.is_mutable:  # in place: the result is the written argument, wrapper and all
            return args[0] if isinstance(args[0], cls) else out
        return out

    def fsdp_pre_all_gather(self, mesh, outer_size, outer_stride, module, mp_policy):
        w = self._data if mp_policy.param_dtype is None else self._data.to(mp_policy.param_dtype)
        ranks, rows = mesh.size(), outer_size[0]
        padded = -(-rows // ranks)
        if w.shape[0] < padded:  # FSDP2's short last shard: zero rows change no amax
            w = torch.cat([w, w.new_zeros(padded - w.shape[0], *w.shape[1:])])
        mode = _mode(self._recipe, rows, ranks, tuple(outer_size))
        if mode == "plain":
            return (w,), ("plain", None)
        if mode == "tensorwise":
            amax = w.abs().amax().float()
            dist.all_reduce(amax, op=dist.ReduceOp.MAX, group=mesh.get_group())
            # quantize_fp8 takes the scale from the group's amax: append the global amax as one
            # more element, so the shard's codes and scale are those of the full weight
            q, s = quantize_fp8(torch.cat([w.reshape(-1), amax.to(w.dtype).reshape(1)]), E4M3, "tensor")
            return (q[:-1].view(w.shape).view(torch.uint8),), ("tensorwise", s)
        q, s = quantize_fp8(w.contiguous(), E4M3, "row" if mode == "rowwise" else "tile")
        return (q.view(torch.uint8), s), (mode, None)

    def fsdp_post_all_gather(self, outputs, metadata, param_dtype, *, out=None):
        mode, scale = metadata
        if mode == "plain":
            return None if out is not None else (outputs[0], ())
        q = outputs[0].view(E4M3)
        if mode != "tensorwise":
            scale = outputs[1]
        if out is not None:  # the same gathered buffers are filled again: only the tensorwise scale is new
            if mode == "tensorwise":  # as FSDP2 refills its buffers: a compiled backward saved this scale
                with torch.autograd._unsafe_preserve_version_counter(out._scale):
                    out._scale.copy_(scale)
            return None
        return Float8GatheredWeight(q, scale.clone() if mode == "tensorwise" else scale, mode, param_dtype), ()


def _mode(recipe: str, rows: int, ranks: int, shape: tuple[int, ...]) -> str:
    """How a weight of ``shape`` travels: its recipe, or "plain" where the recipe's scale groups
    do not split along the shards."""
    reason = None
    if recipe == "rowwise" and rows % ranks:
        reason = f"{rows} rows do not split evenly over {ranks} ranks"
    if recipe == "blockwise" and (rows % ranks or (rows // ranks) % TILE):
        reason = f"a shard's rows ({rows}/{ranks}) are not a multiple of {TILE}"
    if reason is None:
        return recipe
    _say_plain(recipe, shape, reason)
    return "plain"


@functools.cache  # once per recipe and shape
def _say_plain(recipe: str, shape: tuple[int, ...], reason: str) -> None:
    log.info("ember.float8: a %s weight %s is all-gathered in its dtype, not fp8: %s", recipe, shape, reason)


class Float8GatheredWeight(torch.Tensor):
    """The unsharded weight FSDP2 builds from the gathered fp8 codes ``q`` (N×K) and ``scale``
    (the recipe's weight scales): it reports the param dtype, and Float8Linear takes its fp8
    operands from it without quantizing again. Any other op sees the dequantized weight."""

    @staticmethod
    def __new__(cls, q: torch.Tensor, scale: torch.Tensor, recipe: str, dtype: torch.dtype):
        return torch.Tensor._make_wrapper_subclass(
            cls, q.size(), strides=q.stride(), dtype=dtype, device=q.device, requires_grad=False
        )

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, recipe: str, dtype: torch.dtype):
        self._q, self._scale, self._recipe = q, scale, recipe

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self):
        return f"Float8GatheredWeight(recipe={self._recipe}, shape={tuple(self.shape)}, dtype={self.dtype})"

    def __tensor_flatten__(self):
        return ["_q", "_scale"], (self._recipe, self.dtype)

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return Float8GatheredWeight(inner["_q"], inner["_scale"], *meta)

    def fp8(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward GEMM's b operand: W's codes (N×K) and scales."""
        return self._q, self._scale

    def fp8_transposed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The dgrad GEMM's b operand, Wᵀ (K×N) in fp8 with its scales."""
        if self._recipe == "tensorwise":
            return self._q.t().contiguous(), self._scale
        if self._recipe == "blockwise":
            return self._q.t().contiguous(), self._scale.t().contiguous()
        return quantize_fp8(self.dequantize(torch.float32), E4M3, "row", transpose=True)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return (self._q.float() * expand_scale(self._scale, *self._q.shape)).to(dtype or self.dtype)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        if func in (_aten.detach.default, _aten.alias.default):
            (t,) = args
            return cls(t._q, t._scale, t._recipe, t.dtype)
        if func is _aten.as_strided.default and _leading_rows(args[0], *args[1:]):
            t, n = args[0], args[1][0]  # FSDP2's view of the gathered weight in the parameter's own shape
            scale = (
                t._scale
                if t._recipe == "tensorwise"
                else t._scale[: -(-n // (TILE if t._recipe == "blockwise" else 1))]
            )
            return cls(t._q[:n], scale, t._recipe, t.dtype)
        plain_args, plain_kwargs = tree_map_only(cls, lambda t: t.dequantize(), (args, kwargs or {}))
        return func(*plain_args, **plain_kwargs)


def _leading_rows(t: torch.Tensor, size, stride, storage_offset=0) -> bool:
    """Whether as_strided(t, size, stride, storage_offset) takes t's first rows (FSDP2 drops the
    padding of a short last shard that way)."""
    return (
        not storage_offset
        and len(size) == t.dim()
        and size[0] <= t.shape[0]
        and tuple(size[1:]) == tuple(t.shape[1:])
        and tuple(stride) == t.stride()
    )


def plain_state_dict(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """Float8Linear's state dict hook: the weight's local shard as the plain tensor it wraps."""
    from torch.distributed.tensor import DTensor

    key = prefix + "weight"
    w = state_dict.get(key)
    if isinstance(w, DTensor) and isinstance(w._local_tensor, Float8ShardedWeight):
        state_dict[key] = DTensor.from_local(
            w._local_tensor._data, w.device_mesh, w.placements, shape=w.shape, stride=w.stride(), run_check=False
        )
    elif isinstance(w, Float8ShardedWeight):
        state_dict[key] = w._data
