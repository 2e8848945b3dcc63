"""float8 training: quantization recipes, Float8Linear (to come), and plain-PyTorch references."""

from .reference import fp8_gemm_reference, quantize_fp8_reference

__all__ = ["fp8_gemm_reference", "quantize_fp8_reference"]
