"""Tiny, randomly initialized transformers causal LMs built from a config (no download): vocabulary
101, width 32, 2 layers, 4 heads, 4 experts for MoE models, and per model type the extra keys its
config needs to be small. Per-layer lists of the default config (layer types) are cut to two
layers that keep both kinds when there are two. A composite (text + vision...) model type whose
causal LM takes the text part is built as the whole composite with a tiny text part, and the
model from its text config, as AutoModelForCausalLM.from_config does."""

from __future__ import annotations

import torch

VOCAB = 101
# dense sizes, attention heads and special tokens; then MoE and multi-head latent attention (DeepSeek-style)
# keys, which a config that does not know them ignores
_DENSE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, max_position_embeddings=64)
_HEADS = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8)
_TOKENS = dict(tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
_EXPERTS = dict(num_local_experts=4, num_experts=4, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1)
_EXPERT_SIZES = dict(moe_intermediate_size=32, shared_expert_intermediate_size=32)
_ROUTER = dict(output_router_logits=True, router_aux_loss_coef=0.37, n_group=1, topk_group=1, first_k_dense_replace=1)
_MLA = dict(kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8)
BASE = {**_DENSE, **_HEADS, **_TOKENS, **_EXPERTS, **_EXPERT_SIZES, **_ROUTER, **_MLA}
# encoder-decoder models: both parts alike (the causal LM builds the decoder only)
SEQ2SEQ_DECODER = dict(d_model=32) | {
    f"{part}_{key}": n
    for part in ("encoder", "decoder")
    for key, n in dict(layers=2, attention_heads=4, ffn_dim=64).items()
}

# BLT: a byte-level local encoder/decoder around a global transformer over patches, cut by the
# entropy of a small byte LM (the patcher); the global width is the encoder's times cross_attn_k
_BLT_PART = dict(num_attention_heads=4, num_key_value_heads=4, intermediate_size=64, max_position_embeddings=64)
_BLT_LOCAL = dict(vocab_size=VOCAB, hidden_size=32, hidden_size_global=64, num_hidden_layers=1, **_BLT_PART)
BLT = dict(
    encoder_hash_byte_group_vocab=VOCAB,
    encoder_hash_byte_group_size=[3, 4],
    local_attention_window_len=8,
    cross_attn_k=2,
    patcher_config=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, head_dim=8, **_BLT_PART),
    encoder_config=_BLT_LOCAL,
    decoder_config={**_BLT_LOCAL, "num_hidden_layers": 2, "head_dim": 8},
    global_config=dict(hidden_size=64, head_dim=16, num_hidden_layers=2, **_BLT_PART),
)

# gated delta-net heads (linear attention)
_GATED_DELTA_NET = dict(
    linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4
)
_QWEN4_INDEXER = dict(
    indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=8, indexer_budget=8, indexer_compress_ratio=2
)
# Mamba then attention (the pattern "M*"; a stack without attention has no sequence length to cache)
_MAMBA_THEN_ATTENTION = dict(layer_types=["linear_attention", "full_attention"])
# dots3: an indexer on the DSA layers, and the sliding-window layers' own head sizes (swa_*)
_DSA_INDEXER = dict(index_n_heads=2, index_head_dim=8, index_topk=4)
_SWA_HEADS = dict(swa_num_attention_heads=4, swa_num_key_value_heads=4, swa_q_lora_rank=16, swa_kv_lora_rank=16)
_SWA_HEAD_DIMS = dict(swa_head_dim=16, swa_qk_nope_head_dim=8, swa_v_head_dim=8)

# model type -> config keys on top of BASE (what makes that architecture differ, small)
OVERRIDES = {
    "qwen2_moe": dict(decoder_sparse_step=1),
    "qwen3_moe": dict(decoder_sparse_step=1),
    "gemma2": dict(final_logit_softcapping=3.0, attn_logit_softcapping=50.0, query_pre_attn_scalar=8, sliding_window=8),
    "gemma3_text": dict(final_logit_softcapping=3.0, query_pre_attn_scalar=8, sliding_window=8),
    "granite": dict(logits_scaling=2.5, embedding_multiplier=1.5, residual_multiplier=0.5, attention_multiplier=0.3),
    "cohere": dict(logit_scale=0.4, tie_word_embeddings=True),
    "gemma": dict(tie_word_embeddings=True),
    **{
        t: dict(num_key_value_heads=4)
        for t in (
            "axk1",
            "axk2",
            "bailing_hybrid",
            "deepseek_v2",
            "deepseek_v3",
            "deepseek_v32",
            "glm4_moe_lite",
            "glm_moe_dsa",
            "kimi_linear",
            "longcat_flash",
            "minicpm3",
            "sarvam_mla",
            "youtu",
        )
    },  # MLA
    "gemma4_text": dict(vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=8),
    "gemma3n_text": dict(
        vocab_size_per_layer_input=VOCAB,
        hidden_size_per_layer_input=8,
        num_kv_shared_layers=0,
        laurel_rank=8,
        altup_num_inputs=2,
    ),
    "zaya": dict(num_experts_per_tok=1),
    # MoE whose defaults make both tiny layers dense (no router logits, so no aux loss): one sparse
    "flint": dict(mlp_only_layers=[0]),
    "laguna": dict(mlp_layer_types=["dense", "sparse"]),
    "doge": dict(is_moe=True),  # its product-key experts (4 = 2 x 2 keys) instead of the dense MLP
    **{t: dict(hc_lowrank=8, **_QWEN4_INDEXER, **_GATED_DELTA_NET) for t in ("qwen4_exp", "qwen4_exp_text")},
    "granitemoehybrid": dict(
        logits_scaling=2.5, mamba_n_heads=8, mamba_d_state=16, mamba_chunk_size=16, **_MAMBA_THEN_ATTENTION
    ),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"], num_dense_layers=1),
    "nemotron_h": dict(
        mamba_num_heads=8, mamba_head_dim=8, n_groups=1, ssm_state_size=16, chunk_size=16, **_MAMBA_THEN_ATTENTION
    ),
    # rope parameters per layer type (multimodal rope sections sized to head_dim 8)
    "cohere_compass_text": dict(
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=8,
        logit_scale=0.4,
        rope_parameters={
            t: dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 1, 1])
            for t in ("sliding_attention", "full_attention")
        },
    ),
    "blt": BLT,
    # MLA with an indexer on the DSA layers and its own head sizes on the sliding-window ones (swa_*)
    **{
        t: dict(
            num_key_value_heads=4,
            sliding_window=8,
            shared_experts_intermediate_size=32,
            **_DSA_INDEXER,
            **_SWA_HEADS,
            **_SWA_HEAD_DIMS,
        )
        for t in ("dots3_note", "dots3_note_text")
    },
    **{t: dict(intermediate_size_mlp=64) for t in ("llama4", "llama4_text")},  # the dense layers' width
    **{t: _GATED_DELTA_NET for t in ("qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text")},
    "mamba2": dict(num_heads=8, head_dim=8, n_groups=1, expand=2),
    "dbrx": dict(
        d_model=32,
        n_heads=4,
        n_layers=2,
        attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
        ffn_config=dict(ffn_hidden_size=64, moe_num_experts=4, moe_top_k=2),
    ),
    "codegen": dict(rotary_dim=4),
    "gptj": dict(rotary_dim=4),
    "falcon": dict(head_dim=None),
    "xlnet": dict(max_position_embeddings=None, d_model=32, n_head=4, d_head=8, n_layer=2, d_inner=64),
    "jamba": dict(attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1),
    **{
        t: SEQ2SEQ_DECODER
        for t in (
            "bart",
            "bigbird_pegasus",
            "blenderbot",
            "blenderbot-small",
            "marian",
            "mbart",
            "mvp",
            "pegasus",
            "plbart",
        )
    },
}
# composite model type -> keys of the composite itself (its other parts must agree with the tiny text part)
COMPOSITE = {
    "dots3_note": dict(
        vision_config=dict(adapter_out_dim=BASE["hidden_size"]), audio_config=dict(adapter_out_dim=BASE["hidden_size"])
    )
}
_NOISE = ("dropout", "pdrop", "jitter")  # off: the patched and plain runs must see the same function


def _per_layer_lists(config_cls, n_layers: int) -> dict:
    """Per-layer lists of the default config, cut to `n_layers` entries covering the kinds of layer."""
    default = config_cls()
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


def _text_config_class(model_type: str):
    """The text sub-config class when the causal LM of `model_type` is built from its config's text
    part (a text+vision composite: AutoModelForCausalLM.from_config takes get_text_config()), else None."""
    import transformers
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    text_cls = (getattr(CONFIG_MAPPING[model_type], "sub_configs", None) or {}).get("text_config")
    if text_cls is None or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return None
    lm_cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    return text_cls if lm_cls.config_class is text_cls else None


def _quiet(config) -> None:
    for key, value in vars(config).items():
        if any(s in key for s in _NOISE) and isinstance(value, float):
            setattr(config, key, 0.0)


def tiny_config(model_type: str, **extra):
    """The tiny config of `model_type`; for a composite, the whole composite with a tiny text part
    (the other parts keep their defaults: the causal LM never builds them)."""
    from transformers import CONFIG_MAPPING

    keys = {**BASE, **OVERRIDES.get(model_type, {}), **extra}
    keys = {k: v for k, v in keys.items() if v is not None}  # None: a key this config must not get
    text_cls = _text_config_class(model_type)
    target = text_cls or CONFIG_MAPPING[model_type]
    keys = {**_per_layer_lists(target, keys["num_hidden_layers"]), **keys}
    if text_cls is None:
        config = target(**keys)
    else:
        config = CONFIG_MAPPING[model_type](text_config=target(**keys), **COMPOSITE.get(model_type, {}))
    _quiet(config)
    _quiet(config.get_text_config())
    return config


def tiny_model(model_type: str, seed: int = 0, **extra):
    import transformers

    from ember.patch.detect import scan

    torch.manual_seed(seed)
    cls = getattr(transformers, scan()[0][model_type])
    config = tiny_config(model_type, **extra)
    if _text_config_class(model_type) is not None:
        config = config.get_text_config()  # as AutoModelForCausalLM.from_config does
    return cls(config).float()


def batch(seed: int = 1, b: int = 2, t: int = 11, ignored: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and their labels, the first `ignored` labels of row 0 ignored (-100)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    labels = ids.clone()
    labels[0, :ignored] = -100
    return ids, labels


def loss_and_grads(model, ids=None, labels=None, **kw):
    """The output and the gradients of the parameters that have one (an offloaded weight has
    none), from one training forward (input_ids=ids, labels=labels, or the inputs in kw)."""
    kw.update({k: v for k, v in (("input_ids", ids), ("labels", labels)) if v is not None})
    model.zero_grad()
    out = model(**kw)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(got, want, rtol: float = 1e-5) -> None:
    """Loss within rtol relative, every gradient within 1e-4 of its largest entry (fp32)."""
    (out, grads), (ref, ref_grads) = got, want
    torch.testing.assert_close(out.loss, ref.loss, rtol=rtol, atol=0)
    assert grads.keys() == ref_grads.keys() and grads
    for n, g in ref_grads.items():
        assert (grads[n] - g).abs().max() <= 1e-4 * g.abs().max().clamp_min(1e-6), n


def tiny_llama():
    """A transformers LlamaForCausalLM of vocabulary 64, width 32, 2 layers (seeded with 0)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return transformers.LlamaForCausalLM(cfg)
