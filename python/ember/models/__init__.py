"""Model definitions used by the trainer (and usable on their own)."""

from .llama import CONFIGS, Llama, LlamaConfig

__all__ = ["CONFIGS", "Llama", "LlamaConfig"]
