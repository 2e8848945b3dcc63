"""float8 training: Float8Linear, convert_to_float8_training, and plain-PyTorch references."""

from .convert import convert_to_float8_training, enable_fp8_all_gather
from .fsdp import Float8GatheredWeight, Float8ShardedWeight
from .linear import RECIPES, Float8Linear, float8_linear
from .reference import fp8_gemm_reference, quantize_fp8_reference

__all__ = [
    "RECIPES",
    "Float8GatheredWeight",
    "Float8Linear",
    "Float8ShardedWeight",
    "convert_to_float8_training",
    "enable_fp8_all_gather",
    "float8_linear",
    "fp8_gemm_reference",
    "quantize_fp8_reference",
]
