"""Thin Python wrappers over torch.ops.ember.* (defaults, fake kernels, autograd)."""

from .apollo import apollo_projection, apollo_step_
from .float8 import quantize_fp8

__all__ = ["apollo_projection", "apollo_step_", "quantize_fp8"]
