"""One-call patching of existing model code (Hugging Face transformers) with ember's kernels."""

from .hf import apply_ember, apply_ember_to_llama, refused, supported, unpatch

__all__ = ["apply_ember", "apply_ember_to_llama", "refused", "supported", "unpatch"]
