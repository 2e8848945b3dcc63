"""Hugging Face checkpoints in and out of ember's Llama: `from_hf` reads a local folder
(config.json + safetensors, one file or sharded with model.safetensors.index.json) of a Llama,
Mistral, Qwen2 or Qwen3 causal LM; `to_hf` writes a folder that transformers'
AutoModelForCausalLM.from_pretrained loads. Nothing is ever downloaded: a name like "org/model"
is looked up in the local Hugging Face cache only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_dir
from .hf_config import HFCheckpointError, llama_config_from_hf
from .llama import Llama, LlamaConfig

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
GENERATION = "generation_config.json"
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}
# safetensors' dtype tags of floating-point tensors that load into a trainable model.
FLOAT_TAGS = {"F32", "BF16", "F16", "F64"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def parse_dtype(dtype, where: str) -> torch.dtype | None:
    """None, a torch floating dtype, or one of DTYPES' names."""
    if dtype is None or dtype in DTYPE_NAMES:
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"{where}: dtype must be one of {', '.join(DTYPES)} (or a torch float dtype), got {dtype!r}")


# --- finding the folder ------------------------------------------------------------------


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "huggingface"
    )
    return Path(home) / "hub"


def resolve_hf_path(spec: str | os.PathLike) -> Path:
    """A local folder, or a repository name ("org/model") in the local Hugging Face cache (its
    `main` snapshot, else its newest). Never downloads."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise FileNotFoundError(f"Hugging Face checkpoint {spec}: {path.name} is a file: pass its folder")
    name = str(spec)
    repo = _hub_cache() / ("models--" + name.replace("/", "--"))
    snapshots = repo / "snapshots"
    if "/" in name and snapshots.is_dir():
        ref = repo / "refs" / "main"
        if ref.is_file():  # the revision `main` was downloaded as, and no other
            if not (snapshots / ref.read_text().strip()).is_dir():
                raise FileNotFoundError(
                    f"Hugging Face checkpoint {name!r}: the cache's refs/main names snapshot "
                    f"{ref.read_text().strip()!r}, which is not there ({snapshots}): download it again"
                )
            return snapshots / ref.read_text().strip()
        found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    raise FileNotFoundError(
        f"Hugging Face checkpoint {name!r}: no such folder, and not in the local Hugging Face "
        f"cache ({_hub_cache()}); nothing is downloaded: download it first (e.g. `hf download`)"
    )


def _read_json_object(file: Path) -> dict:
    try:
        value = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise HFCheckpointError(f"Hugging Face checkpoint {file}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise HFCheckpointError(f"Hugging Face checkpoint {file}: {file.name} is not a JSON object")
    return value


def read_hf_config(path: Path) -> dict:
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"Hugging Face checkpoint {path}: no config.json{_what_it_is(Path(path))}")
    return _read_json_object(file)


def _what_it_is(folder: Path) -> str:
    """What a folder without config.json that people pass as a model is, and what to do."""
    if (folder / "adapter_config.json").is_file():
        return (
            ": a PEFT adapter (adapter_config.json), not a model: merge it into its base model first "
            "(peft's merge_and_unload(), then save_pretrained)"
        )
    if any((folder / name).is_file() for name in ("config.toml", "meta.json")):  # a run, a checkpoint
        return ": an ember run or checkpoint folder (`ember export RUN OUT` makes a Hugging Face folder of it)"
    return ""


def read_generation_config(path: Path) -> dict | None:
    """The folder's generation_config.json (sampling defaults, end-of-sequence ids), or None."""
    file = Path(path) / GENERATION
    return _read_json_object(file) if file.is_file() else None


def _index_files(path: Path) -> list[Path]:
    """The safetensors files that model.safetensors.index.json lists, in transformers' order."""
    index = _read_json_object(path / INDEX)
    if not isinstance(index.get("weight_map"), dict):
        raise HFCheckpointError(f"Hugging Face checkpoint {path}: {INDEX} has no weight_map")
    names = sorted(set(index["weight_map"].values()))
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"Hugging Face checkpoint {path}: {INDEX} names missing files: {', '.join(missing)}")
    return [path / n for n in names]


def _tensor_names(file: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), "pt") as f:
            return list(f.keys())
    except SafetensorError as exc:
        raise HFCheckpointError(f"Hugging Face checkpoint {file}: not a readable safetensors file ({exc})") from None


def weight_files(path: Path) -> dict[str, Path]:
    """Each tensor name of the checkpoint and the safetensors file that holds it, found as
    transformers finds them: model.safetensors when the folder has one (an index beside it is left
    from an earlier sharded save), else the files the index lists, each tensor where their headers
    put it (whatever file the index's weight_map names)."""
    path = Path(path)
    if (path / SINGLE).is_file():
        files = [path / SINGLE]
    elif (path / INDEX).is_file():
        files = _index_files(path)
    else:
        other = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pth")]
        hint = (
            f" (only safetensors are read; found {', '.join(other)}: transformers' "
            "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(new_folder) writes them)"
            if other
            else ""
        )
        raise FileNotFoundError(f"Hugging Face checkpoint {path}: no {SINGLE} and no {INDEX}{hint}")
    out: dict[str, Path] = {}
    for file in files:
        for name in _tensor_names(file):
            if name in out:
                raise HFCheckpointError(
                    f"Hugging Face checkpoint {path}: {name} is in both {out[name].name} and {file.name}"
                )
            out[name] = file
    return out


# --- tensor names ------------------------------------------------------------------------

_LAYER = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "attention.q_norm": "self_attn.q_norm",
    "attention.k_norm": "self_attn.k_norm",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
}
_TOP = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)\.(weight|bias)")


def hf_name(name: str) -> str:
    """The Hugging Face tensor name of an ember parameter name."""
    if name in _TOP:
        return _TOP[name]
    m = _LAYER_RE.fullmatch(name)
    if not m or m.group(2) not in _LAYER:
        raise KeyError(f"no Hugging Face name for ember parameter {name!r}")
    return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}.{m.group(3)}"


def _source_name(name: str) -> str:
    """An ember parameter name without wrapper prefixes (torch.compile, checkpoint wrappers)."""
    return name.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", "")


# --- loading -----------------------------------------------------------------------------


def untie_if_distinct(path: Path, cfg: LlamaConfig) -> LlamaConfig:
    """transformers' rule for a config that ties the head to the embeddings but a checkpoint that
    holds both tensors: tied when their values are equal, else two tensors (an untied model).
    Compares a block of rows at a time."""
    from safetensors import safe_open

    head, emb = "lm_head.weight", "model.embed_tokens.weight"
    try:
        files = weight_files(path) if cfg.tie_embeddings else {}
    except FileNotFoundError:  # no weights (a run's kept config.json): check_weights says so where it matters
        return cfg
    if head not in files or emb not in files:
        return cfg
    with safe_open(str(files[head]), "pt") as h, safe_open(str(files[emb]), "pt") as e:
        a, b = h.get_slice(head), e.get_slice(emb)
        if a.get_shape() != b.get_shape():
            return cfg.replace(tie_embeddings=False)  # check_weights names the shape
        for start in range(0, a.get_shape()[0], 4096):
            if not torch.equal(a[start : start + 4096], b[start : start + 4096]):
                return cfg.replace(tie_embeddings=False)
    return cfg


EMBEDDING = "model.embed_tokens.weight"


def _stored(name: str, files: dict[str, Path]) -> str:
    """The checkpoint's name of a parameter's tensor: a tied model saved with its head alone (no
    embedding tensor) has the embedding under lm_head.weight, as transformers ties it."""
    return "lm_head.weight" if name == EMBEDDING and name not in files and "lm_head.weight" in files else name


def check_weights(path: Path, model_cfg: LlamaConfig) -> dict[str, Path]:
    """The checkpoint's tensors exactly match the model's parameters (names, shapes) and are
    floating point; returns weight_files(path). Reads headers only."""
    from safetensors import safe_open

    files = weight_files(path)
    with torch.device("meta"):
        shapes = {hf_name(n): tuple(p.shape) for n, p in Llama(model_cfg).named_parameters()}
    ignored = {"lm_head.weight"} if model_cfg.tie_embeddings else set()
    names = {n for n in files if n not in ignored and not n.endswith("rotary_emb.inv_freq")}
    if model_cfg.tie_embeddings and _stored(EMBEDDING, files) != EMBEDDING:
        names.add(EMBEDDING)
    missing, extra = sorted(set(shapes) - names), sorted(names - set(shapes))
    if missing or extra:
        raise HFCheckpointError(
            f"Hugging Face checkpoint {path}: tensors do not match its config.json"
            + (f"; missing {', '.join(missing[:5])}" if missing else "")
            + (f"; unexpected {', '.join(extra[:5])}" if extra else "")
        )
    by_file: dict[Path, list[str]] = {}
    for n in shapes:
        by_file.setdefault(files[_stored(n, files)], []).append(n)
    for file, group in by_file.items():
        with safe_open(str(file), "pt") as f:
            for n in group:
                s = f.get_slice(_stored(n, files))
                if tuple(s.get_shape()) != shapes[n]:
                    raise HFCheckpointError(
                        f"Hugging Face checkpoint {path}: {n} has shape {tuple(s.get_shape())}, the config says {shapes[n]}"
                    )
                if s.get_dtype() not in FLOAT_TAGS:
                    raise HFCheckpointError(
                        f"Hugging Face checkpoint {path}: {n} is {s.get_dtype()}, not a float "
                        f"tensor (quantized checkpoints are not supported; use bf16/fp16/fp32 weights)"
                    )
    return files


@torch.no_grad()
def load_hf_weights(model: Llama, path: str | Path, files: dict[str, Path] | None = None) -> None:
    """Copy the checkpoint's tensors into `model`'s parameters (already materialized, any
    dtype). A sharded parameter (a DTensor, e.g. under FSDP2) reads only its own slice from the
    file, so no rank holds the whole model."""
    from safetensors import safe_open

    path = resolve_hf_path(path)
    files = files or check_weights(path, model.config)
    params = {hf_name(_source_name(n)): p for n, p in model.named_parameters()}
    by_file: dict[Path, list[str]] = {}
    for n in params:
        by_file.setdefault(files[_stored(n, files)], []).append(n)
    for file, names in by_file.items():
        with safe_open(str(file), "pt", device="cpu") as f:
            for n in names:
                p, stored = params[n], _stored(n, files)
                if hasattr(p, "device_mesh"):  # a DTensor: this rank's slice only
                    from torch.distributed.tensor import DTensor
                    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

                    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
                    local = f.get_slice(stored)[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
                    local = local.to(device=p.to_local().device, dtype=p.dtype)
                    p.copy_(
                        DTensor.from_local(
                            local, p.device_mesh, p.placements, shape=p.shape, stride=p.stride(), run_check=False
                        )
                    )
                else:
                    p.copy_(f.get_tensor(stored))
    model.init_buffers()


def _checkpoint_dtype(hf: dict, files: dict[str, Path]) -> torch.dtype:
    """The dtype transformers loads a checkpoint in by default: config.json's `dtype`, else its
    older `torch_dtype`, else the first tensor's."""
    from safetensors import safe_open

    named = hf.get("dtype") or hf.get("torch_dtype")
    if named is not None:
        # transformers' rule, getattr(torch, name): "bfloat16", "float32", also "half", "float", "double"
        found = DTYPES.get(str(named).lower()) or getattr(torch, str(named), None)
        if found not in DTYPE_NAMES:
            raise HFCheckpointError(f"from_hf: config.json's dtype {named!r} is not a float dtype")
        return found
    name, file = next(iter(files.items()))
    with safe_open(str(file), "pt") as f:
        tag = f.get_slice(name).get_dtype()
    return {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}[tag]


def from_hf(
    path: str | os.PathLike, dtype=None, max_seq_len: int | None = None, device: str | torch.device = "cpu"
) -> Llama:
    """ember's Llama with the weights of a local Hugging Face checkpoint (a folder, or a name in
    the local HF cache). dtype: None takes the one transformers would (config.json's dtype, else
    the tensors'); max_seq_len: None takes the config's max_position_embeddings."""
    dtype = parse_dtype(dtype, "from_hf")
    path = resolve_hf_path(path)
    cfg = llama_config_from_hf(read_hf_config(path), max_seq_len)
    cfg = untie_if_distinct(path, cfg.replace(hf_generation_config=read_generation_config(path)))
    files = check_weights(path, cfg)
    dtype = dtype or _checkpoint_dtype(cfg.hf_config, files)
    with torch.device("meta"):
        model = Llama(cfg)
    model.to_empty(device=device)
    for module in model.modules():  # parameters in `dtype`; the RoPE tables stay fp32
        for name, p in list(module.named_parameters(recurse=False)):
            setattr(module, name, nn.Parameter(torch.empty_like(p, dtype=dtype)))
    load_hf_weights(model, path, files)
    return model.eval()


# --- export ------------------------------------------------------------------------------


def hf_config_for(
    cfg: LlamaConfig, dtype: torch.dtype, eos_token_id: int | None = None, bos_token_id: int | None = None
) -> dict:
    """config.json of a model: the imported one (same architecture and fields) or, for a model
    trained from scratch, a LlamaForCausalLM (Qwen2 / Qwen3 when it has their options)."""
    if cfg.hf_config is not None:
        out = {**cfg.hf_config, "tie_word_embeddings": cfg.tie_embeddings}  # untie_if_distinct may untie
    else:
        arch = {
            (False, False): "LlamaForCausalLM",
            (True, False): "Qwen2ForCausalLM",
            (False, True): "Qwen3ForCausalLM",
        }.get((cfg.attn_bias, cfg.qk_norm))
        if arch is None:
            raise ValueError("to_hf: a model with both q/k/v biases and q/k norms has no Hugging Face architecture")
        out = {
            "architectures": [arch],
            "model_type": arch.removesuffix("ForCausalLM").lower(),
            "hidden_act": "silu",
            "hidden_size": cfg.dim,
            "intermediate_size": cfg.hidden,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.kv_heads,
            "head_dim": cfg.head_dim,
            "vocab_size": cfg.vocab_size,
            "rms_norm_eps": cfg.norm_eps,
            "max_position_embeddings": cfg.max_seq_len,
            "tie_word_embeddings": cfg.tie_embeddings,
            "initializer_range": cfg.init_std,
            "rope_theta": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {})},
            "attention_bias": False,
            "mlp_bias": False,
            "use_cache": True,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
        }
    out["dtype"] = out["torch_dtype"] = DTYPE_NAMES[dtype]  # transformers 5 reads dtype, 4 torch_dtype
    return out


def generation_config_for(cfg: LlamaConfig, eos_token_id: int | None, bos_token_id: int | None) -> dict | None:
    """generation_config.json of a model: the imported one, unchanged; for a model trained from
    scratch, its tokenizer's end (and beginning) of document ids, so that generate stops at the
    end of a document; None for an imported model that had none (transformers then reads config.json)."""
    if cfg.hf_generation_config is not None:
        return dict(cfg.hf_generation_config)
    if cfg.hf_config is not None:
        return None
    ids = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    return {k: v for k, v in ids.items() if v is not None} or None


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    groups, size = [{}], 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if groups[-1] and size + n > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = t
        size += n
    return groups


def check_out_dir(out: Path, where: str) -> None:
    """out is a new folder, or an empty one that is not the working directory (the export is
    written beside it and renamed into its place)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{where}: {out} exists and is not empty")
    if out.exists() and out.resolve() == Path.cwd().resolve():
        raise ValueError(f"{where}: {out} is the working directory, which the export would replace; name a new folder")


def to_hf(
    model: Llama,
    out_dir: str | os.PathLike,
    dtype=None,
    *,
    tokenizer_files=(),
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
    max_shard_bytes: int = 2 << 30,
) -> Path:
    """Write `model` as a Hugging Face checkpoint folder (config.json, safetensors sharded above
    max_shard_bytes, the given tokenizer files). dtype: None keeps the weights' own (fp32 master
    weights stay fp32). The folder appears complete or not at all (written beside, then
    renamed); an existing non-empty out_dir is an error."""
    from safetensors.torch import save_file

    dtype = parse_dtype(dtype, "to_hf")
    out = Path(out_dir)
    check_out_dir(out, "to_hf")
    missing = [str(f) for f in tokenizer_files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(f"to_hf: no such tokenizer file {', '.join(missing)}")
    from ..sparse import zero_pruned_

    zero_pruned_(model)  # pruned weights leave as zeros, whatever an init put behind the masks
    tensors = {}
    for name, p in model.named_parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        tensors[hf_name(_source_name(name))] = t.detach().to("cpu", dtype or t.dtype).contiguous()
    dtype = dtype or next(iter(tensors.values())).dtype
    config = hf_config_for(model.config, dtype, eos_token_id, bos_token_id)
    generation = generation_config_for(model.config, eos_token_id, bos_token_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:  # an empty folder there is fine (checked above)
        groups = _shards(tensors, max_shard_bytes)
        if len(groups) == 1:
            save_file(groups[0], str(tmp / SINGLE), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, group in enumerate(groups, 1):
                file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
                save_file(group, str(tmp / file), metadata={"format": "pt"})
                weight_map.update({n: file for n in group})
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            (tmp / INDEX).write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
            )
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        if generation is not None:
            (tmp / GENERATION).write_text(json.dumps(generation, indent=1) + "\n")
        for f in tokenizer_files:
            shutil.copyfile(f, tmp / Path(f).name)
    return out
