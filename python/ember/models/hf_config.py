"""config.json read as transformers reads it, without transformers, for the architectures
ember loads, and turned into ember's LlamaConfig (or refused, naming what ember would compute
otherwise). transformers' way: each config class's defaults (a key missing from the file takes
them: a Mistral without `sliding_window` attends within 4096 tokens, a Qwen3 without `head_dim`
has heads of 128), the values its __post_init__ derives, and its RoPE parameters in one form
whatever the file's (transformers 5's rope_parameters, or the older rope_theta + rope_scaling with
"type"). tests/train/test_hf_import.py compares the table with the installed transformers' classes.
"""

from __future__ import annotations

from .llama import LlamaConfig

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


class HFCheckpointError(ValueError):
    """A Hugging Face folder that ember cannot load (missing files, unsupported options)."""


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
MODEL_TYPES = {arch.removesuffix("ForCausalLM").lower(): arch for arch in ARCHITECTURES}  # "qwen2": ...
LAYER_TYPES = ("full_attention", "sliding_attention")


def architecture(hf: dict) -> str | None:
    """The class AutoModelForCausalLM builds: architectures[0], else the one of model_type."""
    archs = hf.get("architectures") or []
    if isinstance(archs, str):  # one name, not in a list: transformers takes it as it is
        return archs
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


# --- config.json → LlamaConfig ------------------------------------------------------------


def _rope(rope: dict, arch: str, where: str) -> tuple[float, dict | None]:
    """(rope_theta, scaling or None) from hf_defaults.rope_parameters' standard form."""
    if any(k in LAYER_TYPES for k in rope):
        raise HFCheckpointError(f"{where}: {arch} with RoPE parameters per layer type is not supported")
    kind, theta = rope["rope_type"], float(rope["rope_theta"])
    if kind == "default":
        return theta, None
    if kind not in ("linear", "llama3"):
        raise HFCheckpointError(f"{where}: RoPE scaling type {kind!r} is not supported (default, linear, llama3)")
    keys = ("factor",) if kind == "linear" else ("factor", "low_freq_factor", "high_freq_factor")
    missing = [k for k in keys if k not in rope]
    if missing:
        raise HFCheckpointError(f"{where}: RoPE scaling {kind!r} lacks {', '.join(missing)}")
    if kind == "llama3":
        keys += ("original_max_position_embeddings",)
    return theta, {"rope_type": kind, **{k: rope[k] for k in keys}}


def _unsupported(arch: str, hf: dict) -> list[str]:
    """The options of a resolved config that ember's Llama does not compute (each architecture
    reads only its own fields: Mistral and Qwen2 ignore attention_bias, only Llama has mlp_bias)."""
    bad = []
    if hf["hidden_act"] not in ("silu", "swish"):  # transformers' two names of x·sigmoid(x)
        bad.append(f"hidden_act={hf['hidden_act']!r} (only silu)")
    if hf.get("mlp_bias"):
        bad.append("mlp_bias=true")
    if hf.get("attention_bias") and arch != "Qwen2ForCausalLM" and "attention_bias" in DEFAULTS[arch]:
        bad.append("attention_bias=true (biases on the output projection)")
    if hf["rope_parameters"].get("partial_rotary_factor", 1.0) != 1.0:
        bad.append("partial_rotary_factor != 1")
    if hf["attention_dropout"]:
        bad.append(f"attention_dropout={hf['attention_dropout']} (ember trains without dropout)")
    return bad


def sliding_window(hf: dict) -> int | None:
    """The window (in tokens) within which some layer of a resolved config attends; None when every
    layer attends to all the tokens before it. Mistral: every layer; Qwen2/Qwen3: the layers that
    layer_types names sliding_attention."""
    arch = architecture(hf)
    if arch == "MistralForCausalLM" or "sliding_attention" in (hf.get("layer_types") or ()):
        return hf.get("sliding_window")
    return None


def llama_config_from_hf(hf: dict, max_seq_len: int | None = None, where: str = "from_hf") -> LlamaConfig:
    """ember's LlamaConfig for a Hugging Face config.json, read through transformers' defaults for
    its architecture (ember.models.hf_defaults), for sequences of max_seq_len (None: the config's
    max_position_embeddings); a clear error, starting with `where`, for anything that would make
    the model compute something else than transformers does."""
    arch = architecture(hf)
    if arch is None and "model_type" not in hf:
        raise HFCheckpointError(
            f"{where}: its config.json names no architectures and no model_type: not a Hugging Face model "
            "folder (an ember run folder? `ember export RUN OUT` makes one from it)"
        )
    if arch not in ARCHITECTURES:
        raise HFCheckpointError(
            f"{where}: architecture {arch or hf.get('model_type')!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    r = resolve(hf)
    bad = _unsupported(arch, r)
    if bad:
        raise HFCheckpointError(f"{where}: {arch} with unsupported options: {'; '.join(bad)}")
    theta, scaling = _rope(r["rope_parameters"], arch, where)
    length = int(max_seq_len or r["max_position_embeddings"])
    window = sliding_window(r)
    if window is not None and window < length:
        raise HFCheckpointError(
            f"{where}: {arch} attends within a sliding window of {window} tokens, which changes the result at "
            f"sequences of {length}; use sequences of at most {window} tokens (data.seq_len of a run, max_seq_len of from_hf)"
        )
    try:
        return _llama_config(r, arch, theta, scaling, length, hf)
    except ValueError as exc:  # heads that do not group, an odd head size: LlamaConfig's checks
        keys = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")
        raise HFCheckpointError(f"{where}: {arch} with {', '.join(f'{k}={r.get(k)}' for k in keys)}: {exc}") from None


def _llama_config(r: dict, arch: str, theta: float, scaling: dict | None, length: int, hf: dict) -> LlamaConfig:
    heads = r["num_attention_heads"]
    head_dim = r.get("head_dim") or r["hidden_size"] // heads
    return LlamaConfig(
        dim=r["hidden_size"],
        n_layers=r["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=r["num_key_value_heads"],
        vocab_size=r["vocab_size"],
        ffn_hidden=r["intermediate_size"],
        norm_eps=float(r["rms_norm_eps"]),
        rope_theta=theta,
        rope_scaling=scaling,
        max_seq_len=length,
        tie_embeddings=bool(r["tie_word_embeddings"]),
        init_std=float(r["initializer_range"]),
        head_size=head_dim if head_dim != r["hidden_size"] // heads else 0,
        attn_bias=arch == "Qwen2ForCausalLM",
        qk_norm=arch == "Qwen3ForCausalLM",
        hf_config=hf,
    )
