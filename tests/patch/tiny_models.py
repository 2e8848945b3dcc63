"""Tiny, randomly initialized transformers causal LMs built from a config (no download): vocabulary
101, width 32, 2 layers, 4 heads, 4 experts for MoE models, and per model type the extra keys its
config needs to be small. Per-layer lists of the default config (layer types) are cut to two
layers that keep both kinds when there are two."""

from __future__ import annotations

import torch

VOCAB = 101
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=64, tie_word_embeddings=False,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
            # MoE (keys a dense config does not know are ignored)
            num_local_experts=4, num_experts=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            shared_expert_intermediate_size=32, n_shared_experts=1, output_router_logits=True,
            router_aux_loss_coef=0.37, n_group=1, topk_group=1, first_k_dense_replace=1,
            # multi-head latent attention (DeepSeek-style)
            kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)
SEQ2SEQ_DECODER = dict(d_model=32, decoder_layers=2, encoder_layers=2, decoder_attention_heads=4,
                       encoder_attention_heads=4, decoder_ffn_dim=64, encoder_ffn_dim=64)

# model type -> config keys on top of BASE (what makes that architecture differ, small)
OVERRIDES = {
    "qwen2_moe": dict(decoder_sparse_step=1),
    "qwen3_moe": dict(decoder_sparse_step=1),
    "gemma2": dict(final_logit_softcapping=3.0, attn_logit_softcapping=50.0, query_pre_attn_scalar=8,
                   sliding_window=8),
    "gemma3_text": dict(final_logit_softcapping=3.0, query_pre_attn_scalar=8, sliding_window=8),
    "granite": dict(logits_scaling=2.5, embedding_multiplier=1.5, residual_multiplier=0.5, attention_multiplier=0.3),
    "cohere": dict(logit_scale=0.4, tie_word_embeddings=True),
    "gemma": dict(tie_word_embeddings=True),
    **{t: dict(num_key_value_heads=4) for t in ("axk1", "axk2", "bailing_hybrid", "deepseek_v2", "deepseek_v3",
                                                "deepseek_v32", "glm4_moe_lite", "glm_moe_dsa", "kimi_linear",
                                                "longcat_flash", "minicpm3", "sarvam_mla", "youtu")},  # MLA
    "gemma4_text": dict(vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8),
    "gemma3n_text": dict(vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8, num_kv_shared_layers=0,
                         laurel_rank=8, altup_num_inputs=2),
    "zaya": dict(num_experts_per_tok=1),
    "mamba2": dict(num_heads=8, head_dim=8, n_groups=1, expand=2),
    "dbrx": dict(d_model=32, n_heads=4, n_layers=2, attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
                 ffn_config=dict(ffn_hidden_size=64, moe_num_experts=4, moe_top_k=2)),
    "codegen": dict(rotary_dim=4),
    "gptj": dict(rotary_dim=4),
    "falcon": dict(head_dim=None),
    "xlnet": dict(max_position_embeddings=None),
    "jamba": dict(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1),
    **{t: SEQ2SEQ_DECODER for t in ("bart", "bigbird_pegasus", "blenderbot", "blenderbot-small", "marian", "mbart",
                                    "mvp", "pegasus", "plbart")},
}
_NOISE = ("dropout", "pdrop", "jitter")  # off: the patched and plain runs must see the same function


def _per_layer_lists(model_type: str, n_layers: int) -> dict:
    """Per-layer lists of the default config, cut to `n_layers` entries covering the kinds of layer."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    n = getattr(default, "num_hidden_layers", None)
    lists = {k: v for k, v in vars(default).items() if isinstance(v, (list, tuple)) and n and len(v) == n and n > 1}
    if not lists:
        return {}
    key = "layer_types" if "layer_types" in lists else next(iter(lists))
    firsts = {}
    for i, kind in enumerate(map(str, lists[key])):
        firsts.setdefault(kind, i)
    idx = (sorted(firsts.values()) + [0] * n_layers)[:n_layers]
    out = {}
    for k, v in lists.items():
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        out[k] = [BASE[k] if numeric and k in BASE else v[i] for i in idx]
    return out


def tiny_config(model_type: str, **extra):
    from transformers import AutoConfig

    keys = {**BASE, **OVERRIDES.get(model_type, {}), **extra}
    keys = {k: v for k, v in keys.items() if v is not None}  # None: a key this config must not get
    keys = {**_per_layer_lists(model_type, keys["num_hidden_layers"]), **keys}
    config = AutoConfig.for_model(model_type, **keys)
    for key, value in vars(config).items():
        if any(s in key for s in _NOISE) and isinstance(value, float):
            setattr(config, key, 0.0)
    return config


def tiny_model(model_type: str, seed: int = 0, **extra):
    import transformers

    from ember.patch.detect import scan

    torch.manual_seed(seed)
    cls = getattr(transformers, scan()[0][model_type])
    return cls(tiny_config(model_type, **extra)).float()
