"""float8 training: quantization recipes, Float8Linear (to come), and plain-PyTorch references."""

from .reference import quantize_fp8_reference

__all__ = ["quantize_fp8_reference"]
