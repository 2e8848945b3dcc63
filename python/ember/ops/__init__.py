"""Thin Python wrappers over torch.ops.ember.* (defaults, fake kernels, autograd)."""

from .apollo import apollo_projection, apollo_step_
from .cross_entropy import cross_entropy, cross_entropy_stats, linear_cross_entropy
from .float8 import fp8_gemm, quantize_fp8
from .sparse import masked_linear, pack_mask, unpack_mask

__all__ = [
    "apollo_projection",
    "apollo_step_",
    "cross_entropy",
    "cross_entropy_stats",
    "fp8_gemm",
    "linear_cross_entropy",
    "masked_linear",
    "pack_mask",
    "quantize_fp8",
    "unpack_mask",
]
