"""One-call patching of existing model code (Hugging Face transformers) with ember's kernels."""

from .hf import SUPPORTED, apply_ember_to_llama, unpatch

__all__ = ["SUPPORTED", "apply_ember_to_llama", "unpatch"]
