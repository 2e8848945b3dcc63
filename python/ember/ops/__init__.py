"""Thin Python wrappers over torch.ops.ember.* (defaults, fake kernels, autograd)."""

from .float8 import quantize_fp8

__all__ = ["quantize_fp8"]
