"""The tiny transformers models the examples build from a config (random weights, nothing
downloaded): LLaMA-shaped sizes written once, in the keys every causal LM config knows."""

from __future__ import annotations

# the examples' byte-vocabulary LLaMA: ember's "debug" size
BYTE_VOCAB = 257
DEBUG_LLAMA = dict(
    hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2
)
# a small model of any family, for a large vocabulary (the logits dominate its memory)
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
SPECIAL_TOKENS = dict(tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def small_causal_lm(model_type: str, vocab: int, max_positions: int, seed: int = 0, **extra):
    """A SMALL causal LM of `model_type` with `vocab` tokens; `extra` config keys override."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    keys = dict(vocab_size=vocab, head_dim=16, max_position_embeddings=max_positions, **SMALL, **SPECIAL_TOKENS)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **{**keys, **extra}))
