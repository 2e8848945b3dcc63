"""How transformers reads a config.json, for the architectures ember loads, without transformers:
each config class's defaults (a key missing from the file takes them: a Mistral without
`sliding_window` attends within 4096 tokens, a Qwen3 without `head_dim` has heads of 128), the
values its __post_init__ derives, and its RoPE parameters in one form whatever the file's
(transformers 5's rope_parameters, or the older rope_theta + rope_scaling with "type").
tests/train/test_hf_import.py compares this table with the installed transformers' classes.
"""

from __future__ import annotations

_COMMON = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "use_cache": True,
    "pad_token_id": None,
    "tie_word_embeddings": False,
    "rope_parameters": None,
    "attention_dropout": 0.0,
}
_QWEN = {
    **_COMMON,
    "vocab_size": 151936,
    "intermediate_size": 22016,
    "num_key_value_heads": 32,
    "max_position_embeddings": 32768,
    "use_sliding_window": False,
    "sliding_window": 4096,
    "max_window_layers": 28,
    "layer_types": None,
    "bos_token_id": None,
    "eos_token_id": None,
}
# The fields of each transformers config class (beyond PretrainedConfig's own) and their defaults.
DEFAULTS: dict[str, dict] = {
    "LlamaForCausalLM": {
        **_COMMON,
        "intermediate_size": 11008,
        "num_key_value_heads": None,
        "max_position_embeddings": 2048,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pretraining_tp": 1,
        "attention_bias": False,
        "mlp_bias": False,
        "head_dim": None,
    },
    "MistralForCausalLM": {
        **_COMMON,
        "intermediate_size": 14336,
        "num_key_value_heads": 8,
        "head_dim": None,
        "max_position_embeddings": 4096 * 32,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "sliding_window": 4096,
    },
    "Qwen2ForCausalLM": _QWEN,
    "Qwen3ForCausalLM": {**_QWEN, "head_dim": 128, "attention_bias": False},
}
DEFAULT_THETA = 10000.0  # RotaryEmbeddingConfigMixin.default_theta, the same for the four
MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
MODEL_TYPES["qwen3"] = "Qwen3ForCausalLM"
LAYER_TYPES = ("full_attention", "sliding_attention")


def architecture(hf: dict) -> str | None:
    """The class AutoModelForCausalLM builds: architectures[0], else the one of model_type."""
    archs = hf.get("architectures") or []
    return archs[0] if archs else MODEL_TYPES.get(hf.get("model_type"))


def resolve(hf: dict) -> dict:
    """config.json as transformers' config object of its architecture holds it: every field of
    DEFAULTS, derived ones filled (head_dim, num_key_value_heads, Qwen's layer_types), and
    `rope_parameters` standardized (see rope_parameters). Keys the class does not know are kept,
    as transformers keeps them as attributes. The architecture must be one of DEFAULTS."""
    arch = architecture(hf)
    out = {**DEFAULTS[arch], **{k: v for k, v in hf.items() if k not in ("rope_scaling", "rope_theta")}}
    if "head_dim" in DEFAULTS[arch] and out["head_dim"] is None:
        out["head_dim"] = out["hidden_size"] // out["num_attention_heads"]
    if out["num_key_value_heads"] is None:
        out["num_key_value_heads"] = out["num_attention_heads"]
    if "use_sliding_window" in DEFAULTS[arch]:  # Qwen2 and Qwen3
        out["sliding_window"] = out["sliding_window"] if out["use_sliding_window"] else None
        if out["layer_types"] is None:
            out["layer_types"] = [
                "sliding_attention"
                if out["sliding_window"] is not None and i >= out["max_window_layers"]
                else "full_attention"
                for i in range(out["num_hidden_layers"])
            ]
    out["rope_parameters"] = rope_parameters(hf, out["max_position_embeddings"])
    return out


def rope_parameters(hf: dict, max_position_embeddings: int) -> dict:
    """transformers 5's rule: the older `rope_scaling` wins over `rope_parameters`; rope_theta
    from that dict, else the top-level key, else 10000; "type" is the older name of
    "rope_type"; llama3 scaling's original_max_position_embeddings from the top-level key, else
    max_position_embeddings. A dict per layer type comes back as it is (ember refuses it)."""
    rope = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
    if any(k in LAYER_TYPES for k in rope):
        return rope
    rope.setdefault("rope_theta", hf.get("rope_theta", DEFAULT_THETA))
    if hf.get("partial_rotary_factor") is not None:
        rope.setdefault("partial_rotary_factor", hf["partial_rotary_factor"])
    rope.setdefault("rope_type", rope.get("type", "default"))
    if rope["rope_type"] in ("llama3", "yarn", "longrope"):
        if "original_max_position_embeddings" in hf:
            rope["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
        else:
            rope.setdefault("original_max_position_embeddings", max_position_embeddings)
    return rope
