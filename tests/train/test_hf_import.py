"""ember.models.from_hf / to_hf against transformers: tiny random models of each supported
architecture, built and saved by transformers in the test (nothing downloaded)."""

import dataclasses
import json

import pytest
import torch

from ember.models import CONFIGS, Llama, from_hf, to_hf
from ember.models.hf import HFCheckpointError, resolve_hf_path

transformers = pytest.importorskip("transformers")

SIZE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
SIZE.update(vocab_size=101, max_position_embeddings=128, rms_norm_eps=1e-6)
FAMILIES = {
    # Llama 3.1's RoPE scaling, with an original context short enough that it changes the frequencies
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            }
        ),
    ),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 20000.0}),
    ),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),  # q/k/v biases, tied head
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=32)),  # q/k norms, head_dim != hidden/heads
}


def hf_model(family: str, seed: int = 0, **changes):
    config_cls, model_cls, extra = FAMILIES[family]
    config = getattr(transformers, config_cls)(**{**SIZE, **extra, **changes})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).float().eval()
    with torch.no_grad():  # every tensor random and non-zero: biases and norms too
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.2 if p.ndim == 1 else 0.1)
    return model


def tokens(n=40, vocab=101, batch=2, seed=1):
    return torch.randint(0, vocab, (batch, n), generator=torch.Generator().manual_seed(seed))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def hf_logits(model, x):
    with torch.no_grad():
        return model(x).logits.float()


@pytest.mark.parametrize("family", FAMILIES)
def test_from_hf_logits_equal_transformers(tmp_path, family):
    ref = hf_model(family)
    ref.save_pretrained(tmp_path / family)
    model = from_hf(tmp_path / family)
    assert model.config.attn_bias == (family == "qwen2") and model.config.qk_norm == (family == "qwen3")
    x = tokens()
    with torch.no_grad():
        got = model(x)
    assert rel_err(got, hf_logits(ref, x)) <= 1e-4


def test_sharded_checkpoint_loads(tmp_path):
    ref = hf_model("llama", seed=3)
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="30KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 2
    x = tokens()
    with torch.no_grad():
        assert rel_err(from_hf(tmp_path / "sharded")(x), hf_logits(ref, x)) <= 1e-4


def test_from_hf_dtype(tmp_path):
    hf_model("qwen3").save_pretrained(tmp_path / "m")
    assert from_hf(tmp_path / "m").tok_embeddings.weight.dtype == torch.float32  # the checkpoint's own
    model = from_hf(tmp_path / "m", dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.rope_cos.dtype == torch.float32
    with pytest.raises(ValueError, match="from_hf: dtype must be one of"):
        from_hf(tmp_path / "m", dtype="int8")


@pytest.mark.parametrize("family", FAMILIES)
def test_export_round_trip(tmp_path, family):
    """from_hf → to_hf → from_pretrained: the same architecture, tensor names and logits."""
    src = tmp_path / "src"
    hf_model(family, seed=5).save_pretrained(src)
    model = from_hf(src)
    to_hf(model, tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back).__name__ == FAMILIES[family][1]
    x = tokens()
    with torch.no_grad():
        assert rel_err(hf_logits(back, x), model(x)) <= 1e-5
    from safetensors import safe_open

    with (
        safe_open(str(src / "model.safetensors"), "pt") as a,
        safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as b,
    ):
        assert set(b.keys()) == set(a.keys()) - ({"lm_head.weight"} if family == "qwen2" else set())


def test_export_scratch_model_as_llama_sharded_and_bf16(tmp_path):
    cfg = CONFIGS["debug"].replace(dim=64, n_layers=2, n_heads=4, ffn_hidden=96, max_seq_len=64, tie_embeddings=False)
    with torch.device("meta"):
        model = Llama(cfg)
    model.to_empty(device="cpu").init_weights(seed=7)
    to_hf(model, tmp_path / "fp32", max_shard_bytes=40_000, eos_token_id=256)
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert (tmp_path / "fp32" / "model.safetensors.index.json").is_file()
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "fp32").eval()
    x = tokens(vocab=257)
    with torch.no_grad():
        assert rel_err(hf_logits(back, x), model(x)) <= 1e-4
    to_hf(model, tmp_path / "bf16", dtype="bf16")
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.safetensors"))  # noqa: E731
    assert abs(size(tmp_path / "bf16") / size(tmp_path / "fp32") - 0.5) < 0.01
    with pytest.raises(FileExistsError, match="to_hf: .* not empty"):
        to_hf(model, tmp_path / "bf16")


def test_hf_cache_name_resolves_locally(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_hf_path("org/tiny") == snap
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache.*nothing is downloaded"):
        resolve_hf_path("org/absent")


def _saved(tmp_path, family="llama", **changes):
    path = tmp_path / "m"
    hf_model(family, **changes).save_pretrained(path)
    return path


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_unsupported_architecture_is_named(tmp_path):
    path = _saved(tmp_path)
    _edit_config(path, architectures=["GPT2LMHeadModel"])
    with pytest.raises(HFCheckpointError, match="GPT2LMHeadModel.*not supported.*LlamaForCausalLM"):
        from_hf(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (dict(mlp_bias=True), "mlp_bias"),
        (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}), "'yarn' is not supported"),
    ],
)
def test_unsupported_options_are_named(tmp_path, change, message):
    path = _saved(tmp_path)
    _edit_config(path, **change)
    with pytest.raises(HFCheckpointError, match=message):
        from_hf(path)


def test_mistral_sliding_window(tmp_path):
    path = _saved(tmp_path, "mistral", sliding_window=32)
    with pytest.raises(HFCheckpointError, match="sliding window of 32 tokens"):
        from_hf(path)  # max_position_embeddings 128 > 32
    ref = hf_model("mistral", sliding_window=32)
    x = tokens(n=32)
    with torch.no_grad():  # within the window the result is a full causal attention
        assert rel_err(from_hf(path, max_seq_len=32)(x), hf_logits(ref, x)) <= 1e-4


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        from_hf(tmp_path / "absent")
    path = _saved(tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors and no model.safetensors.index.json"):
        from_hf(path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_hf(path)


def test_quantized_or_mismatched_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _saved(tmp_path)
    sd = load_file(str(path / "model.safetensors"))
    sd["model.norm.weight"] = sd["model.norm.weight"].to(torch.int8)
    save_file(sd, str(path / "model.safetensors"))
    with pytest.raises(HFCheckpointError, match="model.norm.weight is I8, not a float tensor"):
        from_hf(path)
    _edit_config(path, vocab_size=99)
    with pytest.raises(HFCheckpointError, match="embed_tokens.weight has shape"):
        from_hf(path)


# --- config.json read as transformers reads it ---------------------------------------------

CONFIG_CLASSES = {arch: getattr(transformers, cls) for cls, arch, _ in FAMILIES.values()}
# PretrainedConfig's own fields (no effect on what the model computes)
BASE_FIELDS = {f.name for f in dataclasses.fields(transformers.PretrainedConfig)}


@pytest.mark.parametrize("arch", CONFIG_CLASSES)
def test_defaults_table_matches_transformers(arch):
    """ember's table of defaults has every field of the installed transformers' config class,
    with its default; resolved configs (derived fields, RoPE forms) equal transformers' objects."""
    from ember.models.hf_config import DEFAULT_THETA, DEFAULTS, resolve

    cls = CONFIG_CLASSES[arch]
    assert set(DEFAULTS[arch]) == {f.name for f in dataclasses.fields(cls)} - BASE_FIELDS
    assert cls.default_theta == DEFAULT_THETA
    partial = [
        {},
        dict(hidden_size=64, num_attention_heads=8, num_hidden_layers=3),
        dict(num_key_value_heads=None, head_dim=None),
        dict(use_sliding_window=True, sliding_window=16, max_window_layers=1, num_hidden_layers=3),
        dict(rope_theta=5e5, rope_scaling={"type": "linear", "factor": 2.0}),
        dict(
            rope_parameters={"rope_type": "default", "rope_theta": 7.0}, rope_scaling={"type": "linear", "factor": 3.0}
        ),
        dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}),
    ]
    for keys in partial:
        try:
            want = cls(**keys)
        except Exception:  # transformers refuses it (e.g. Qwen3's head_dim must be an int, not null
            continue
        got = resolve({"architectures": [arch], **keys})
        for name in DEFAULTS[arch]:
            assert got[name] == getattr(want, name), (keys, name)


def same_as_transformers(path, n=40):
    """from_hf(path) has the dtype transformers' from_pretrained(path) gives, and computes its
    logits (both in fp32)."""
    ref = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    assert from_hf(path, max_seq_len=n).tok_embeddings.weight.dtype == ref.dtype
    if ref.dtype != torch.float32:
        ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    x = tokens(n=n, vocab=ref.config.vocab_size)
    with torch.no_grad():
        assert rel_err(from_hf(path, dtype="fp32", max_seq_len=n)(x), hf_logits(ref, x)) <= 1e-4


LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


@pytest.mark.parametrize(
    "change",
    [
        dict(head_dim=None),  # older Llama configs: no head_dim key
        dict(rope_parameters=None, rope_theta=20000.0, rope_scaling={"type": "linear", "factor": 2.0}),
        dict(rope_parameters=None, rope_theta=500000.0, rope_scaling={"rope_type": "llama3", **LLAMA3}),
        dict(rope_parameters={"rope_type": "default"}, rope_theta=12345.0),  # theta beside rope_parameters
        dict(
            rope_parameters={"rope_type": "default", "rope_theta": 111.0},
            rope_scaling={"type": "linear", "factor": 3.0},
        ),
        dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, **LLAMA3}, max_position_embeddings=24),
        dict(architectures=None),  # model_type alone names the class
        dict(hidden_act="swish"),  # transformers' other name of silu
    ],
)
def test_older_and_partial_llama_configs(tmp_path, change):
    path = _saved(tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(change)
    (path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    same_as_transformers(path)


def test_missing_keys_take_transformers_defaults(tmp_path):
    """A Qwen3 without head_dim has heads of 128; a Mistral without num_key_value_heads has 8
    and without sliding_window attends within 4096 tokens."""
    path = _saved(tmp_path, "qwen3", head_dim=128)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "head_dim"}))
    same_as_transformers(path)
    path = tmp_path / "mistral"
    hf_model("mistral", num_attention_heads=16, num_key_value_heads=8).save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(
        json.dumps({k: v for k, v in cfg.items() if k not in ("num_key_value_heads", "sliding_window")})
    )
    same_as_transformers(path)
    with pytest.raises(HFCheckpointError, match="sliding window of 4096 tokens"):
        from_hf(path, max_seq_len=5000)


def test_qwen_sliding_layers(tmp_path):
    """Qwen2's window applies from layer max_window_layers on, and only with use_sliding_window."""
    path = _saved(tmp_path, "qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=1)
    with pytest.raises(HFCheckpointError, match="sliding window of 16 tokens"):
        from_hf(path, max_seq_len=32)
    _edit_config(path, max_window_layers=2, layer_types=None)  # no layer slides
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if v is not None}))
    same_as_transformers(path)


@pytest.mark.parametrize(
    "family, keys",
    [  # the fields of configs written by transformers 4 (Qwen2.5, Mistral 7B v0.1), sizes shrunk
        ("qwen2", dict(rope_theta=1e6, sliding_window=131072, use_sliding_window=False, max_window_layers=21)),
        ("mistral", dict(rope_theta=1e4, sliding_window=4096, torch_dtype="bfloat16")),
        ("qwen3", dict(rope_theta=1e6, rope_scaling=None, head_dim=32, max_window_layers=28)),
    ],
)
def test_transformers_4_configs(tmp_path, family, keys):
    path = _saved(tmp_path, family)
    cfg = {
        k: v for k, v in json.loads((path / "config.json").read_text()).items() if k not in ("rope_parameters", "dtype")
    }
    (path / "config.json").write_text(json.dumps({**cfg, **keys}))
    same_as_transformers(path)
