"""Model definitions used by the trainer (and usable on their own)."""

from .hf import from_hf, to_hf
from .llama import CONFIGS, Llama, LlamaConfig

__all__ = ["CONFIGS", "Llama", "LlamaConfig", "from_hf", "to_hf"]
