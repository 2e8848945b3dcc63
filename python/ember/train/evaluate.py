"""Using a checkpoint outside the trainer: load its model, its validation loss (`ember eval`)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..data.loader import parse_sources, source_vocab
from ..models import Llama
from . import checkpoint as ckpt
from . import distributed
from .build import apply_sparsity, model_config
from .config import Config, config_from_dict
from .trainer import Evaluator, compute_dtype


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu", cfg: Config | None = None) -> tuple[Llama, Config, Path]:
    """(the checkpoint's model with its weights, eval mode; the run's config; the checkpoint
    folder). `checkpoint`: a checkpoint folder or a run folder (its latest)."""
    path = ckpt.find_checkpoint(checkpoint)
    saved = config_from_dict(ckpt.read_meta(path)["config"])
    cfg = cfg or saved
    vocab, _ = source_vocab(parse_sources(saved.data.sources)[0], saved.data.tokenizer)
    mcfg = model_config(saved, vocab).replace(max_seq_len=max(saved.data.seq_len, cfg.data.seq_len))
    with torch.device("meta"):
        model = Llama(mcfg)
    model.to_empty(device=device)
    apply_sparsity(saved, model)  # the run's SparseLinear layers (their masks come with the state)
    ckpt.load_model_weights(path, model)
    model.init_buffers()
    model.fused_linear_ce = cfg.loss.fused_linear_ce
    return model.eval(), saved, path


def evaluate_checkpoint(checkpoint: str | Path, cfg: Config) -> dict:
    """Validation loss (nats per token) and perplexity of a checkpoint on cfg's data sources."""
    d = distributed.Dist(device=distributed.pick_device(cfg.job.device))
    model, _, path = load_model(checkpoint, d.device, cfg)
    losses = Evaluator(cfg, d, compute_dtype(cfg, d.device))(model)
    if not losses:
        raise ValueError(f"ember eval: no validation data in {cfg.data.sources}")
    mean = sum(losses.values()) / len(losses)
    return {"checkpoint": str(path), "step": ckpt.read_meta(path)["step"], "val_loss": mean, "perplexity": math.exp(mean),
            "per_source": losses}
