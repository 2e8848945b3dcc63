"""--model.init_from: a run that starts from a Hugging Face checkpoint instead of a random
initialization. The model's shape and vocabulary come from the checkpoint's config.json; every
check here runs before any run folder is made, and reads only config.json and the safetensors
headers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..data import corpus
from ..data.loader import parse_sources, source_vocab
from ..data.shards import read_index
from ..models.hf import (
    HFCheckpointError,
    check_weights,
    llama_config_from_hf,
    load_hf_weights,
    read_generation_config,
    read_hf_config,
    resolve_hf_path,
    untie_if_distinct,
)
from ..atomic import atomic_dir, write_json
from ..models.hf import GENERATION
from ..models.llama import Llama, LlamaConfig
from .config import Config, ConfigError

KEPT = "init_from"  # RUN/init_from/: the source's config files as the run read them

SIZE_FLAGS = {
    "dim": "dim",
    "n_layers": "n_layers",
    "n_heads": "n_heads",
    "n_kv_heads": "kv_heads",
    "ffn_hidden": "hidden",
    "vocab_size": "vocab_size",
}


def keep_source(mcfg: LlamaConfig, run_dir: Path) -> None:
    """(rank 0) The run's copy of its source's config.json (its head tied as the run ties it) and
    generation_config.json, in RUN/init_from/, made once (a resumed run keeps what it started
    from): eval, score and export build the model the run trained from it, wherever the source
    folder has gone or whatever replaced it."""
    kept = Path(run_dir) / KEPT
    if kept.is_dir():
        return
    with atomic_dir(kept) as tmp:
        write_json(tmp / "config.json", {**mcfg.hf_config, "tie_word_embeddings": mcfg.tie_embeddings})
        if mcfg.hf_generation_config is not None:
            write_json(tmp / GENERATION, mcfg.hf_generation_config)


def with_kept_source(cfg: Config, checkpoint: Path) -> Config:
    """cfg, with model.init_from pointing at the kept copy of the checkpoint's run, if it has one."""
    run = Path(checkpoint).resolve().parent.parent  # RUN/checkpoints/step-N
    kept = run / KEPT
    if not cfg.model.init_from or not (kept / "config.json").is_file():
        return cfg
    return replace(cfg, model=replace(cfg.model, init_from=str(kept)))


def check_source_unchanged(cfg: Config, checkpoint: Path) -> None:
    """A resume reads model.init_from again: its config files must be those the run kept when it
    started (RUN/init_from/), else ConfigError naming the keys that changed."""
    kept = Path(with_kept_source(cfg, checkpoint).model.init_from)
    if not cfg.model.init_from or kept == Path(cfg.model.init_from):
        return
    now = init_model_config(cfg)
    was = init_model_config(replace(cfg, model=replace(cfg.model, init_from=str(kept))))
    for name, a, b in (
        ("config.json", {**now.hf_config, "tie_word_embeddings": now.tie_embeddings}, was.hf_config),
        (GENERATION, now.hf_generation_config or {}, was.hf_generation_config or {}),
    ):
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in ("dtype", "torch_dtype"))
        if changed:
            raise ConfigError(
                f"config: model.init_from={cfg.model.init_from}: its {name} is not the one the run started from "
                f"({kept / name}): {', '.join(changed)} changed; resume from that source, or start a new run"
            )


def init_model_config(cfg: Config) -> LlamaConfig:
    """The checkpoint's model, for sequences of data.seq_len, after from_hf's checks (the
    architecture and options it computes as transformers does, a sliding window no shorter than
    data.seq_len). Every command that builds a run's model comes here, through build.model_config:
    train (and its preflight), eval, score, export."""
    where = f"config: model.init_from={cfg.model.init_from}"
    try:
        path = resolve_hf_path(cfg.model.init_from)
        mcfg = llama_config_from_hf(read_hf_config(path), max_seq_len=cfg.data.seq_len, where=where)
        mcfg = mcfg.replace(hf_generation_config=read_generation_config(path))  # export writes it back
        return untie_if_distinct(path, mcfg)
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except HFCheckpointError as exc:
        raise ConfigError(str(exc)) from None


def check_init_from(cfg: Config) -> None:
    """Size flags that contradict the checkpoint, data whose ids reach past its vocabulary, and a
    checkpoint whose tensors do not load (missing files, shapes, non-float dtypes): ConfigError."""
    mcfg = init_model_config(cfg)
    wrong = [
        f"model.{flag}={getattr(cfg.model, flag)} (the checkpoint has {getattr(mcfg, attr)})"
        for flag, attr in SIZE_FLAGS.items()
        if getattr(cfg.model, flag) and getattr(cfg.model, flag) != getattr(mcfg, attr)
    ]
    if wrong:
        raise ConfigError(
            f"config: model.init_from={cfg.model.init_from} sets the model's size; these flags contradict it: {', '.join(wrong)} (leave them out)"
        )
    vocab, _ = source_vocab(parse_sources(cfg.data.sources)[0], cfg.data.tokenizer)
    check_control_rows(cfg, vocab, mcfg.vocab_size)
    if vocab > mcfg.vocab_size:
        raise ConfigError(
            f"config: the data's vocabulary ({vocab} ids, data.sources={cfg.data.sources}) is larger than the "
            f"model's in model.init_from={cfg.model.init_from} ({mcfg.vocab_size}): tokenize the data with "
            f"the model's tokenizer (ember prepare --tokenizer {cfg.model.init_from})"
        )
    try:
        check_weights(resolve_hf_path(cfg.model.init_from), mcfg)
    except (FileNotFoundError, HFCheckpointError) as exc:
        raise ConfigError(f"config: model.init_from: {exc}") from None
    check_data_tokenizer(cfg)


def check_control_rows(cfg: Config, vocab: int, model_vocab: int) -> None:
    """Control tokens of `ember prepare --control-tokens` past the checkpoint's vocabulary: the
    model has no embedding rows for them (the ids are the tokenizer's size and +1, so they fit
    only a padded vocabulary). ConfigError saying how to add the rows."""
    src = parse_sources(cfg.data.sources)[0]
    control = {} if src.path == corpus.NAME else read_index(src.path).get("control_tokens") or {}
    past = {token: i for token, i in control.items() if i >= model_vocab}
    if not past or vocab - len(past) > model_vocab:
        return
    names = ", ".join(f"{token} {i}" for token, i in past.items())
    raise ConfigError(
        f"config: data.sources={src.path} has control tokens ({names}) past the vocabulary of model.init_from="
        f"{cfg.model.init_from} ({model_vocab} ids), which has no embedding rows for them (ember does not add "
        f"rows to a checkpoint): grow it to {vocab} ids first, e.g. in transformers "
        f"model.resize_token_embeddings({vocab}, mean_resizing=True) then model.save_pretrained(DIR) with its "
        f"tokenizer files beside it, and train with --model.init_from=DIR"
    )


def _token_ids(tokenizer_json: Path, where: str) -> dict[str, int]:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(tokenizer_json)).get_vocab(with_added_tokens=True)
    except Exception as exc:  # the tokenizers library raises its parse errors as a bare Exception
        raise ConfigError(f"config: {where}: {tokenizer_json}: not a tokenizer.json ({exc})") from None


def check_data_tokenizer(cfg: Config) -> None:
    """When the checkpoint ships its tokenizer.json, each data source was made with it (or with
    one that gives each of its tokens the same id, adding others): else ConfigError. Data of
    another tokenizer (bytes: `ember prepare` without --tokenizer) has ids that name other tokens,
    and training on it would unlearn the model without any error."""
    model_tok = resolve_hf_path(cfg.model.init_from) / "tokenizer.json"
    if not model_tok.is_file():
        return
    want = _token_ids(model_tok, "model.init_from")
    for src in parse_sources(cfg.data.sources):
        if src.path == corpus.NAME:
            spec = cfg.data.tokenizer
        else:
            name = read_index(src.path).get("tokenizer", "byte")
            spec = name if name == "byte" else str(Path(src.path) / name)
        got = {} if spec == "byte" else _token_ids(Path(spec), f"data.sources: {src.path}")
        if any(got.get(token) != i for token, i in want.items()):
            made = "bytes" if spec == "byte" else f"the tokenizer {spec}"
            raise ConfigError(
                f"config: data.sources: {src.path} was tokenized with {made}, not the tokenizer of model.init_from="
                f"{cfg.model.init_from} (its tokenizer.json): its ids name other tokens to the model; tokenize the "
                f"data with the model's tokenizer (ember prepare --tokenizer {cfg.model.init_from})"
            )


def load_init_from(model: Llama, cfg: Config) -> None:
    """The checkpoint's weights into the (materialized, maybe sharded) model: each rank reads its
    own slices."""
    load_hf_weights(model, resolve_hf_path(cfg.model.init_from))


def load_teacher(cfg: Config, device) -> Llama:
    """--loss.distill's teacher: the init_from checkpoint as a whole copy on this rank, for the
    trainer's loss (fp32 on a CPU, whose bf16 GEMMs are slow; the checkpoint's own dtype on a GPU)."""
    from ..models.hf import from_hf

    device = torch.device(device)
    return from_hf(
        resolve_hf_path(cfg.model.init_from),
        dtype="fp32" if device.type == "cpu" else None,
        max_seq_len=cfg.data.seq_len,
        device=device,
    )
