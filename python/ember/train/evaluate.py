"""Validation loss: the Evaluator the trainer calls every eval.every steps, and the same loss for
a checkpoint outside the trainer (`ember eval`), with the loading of a checkpoint's model."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from ..data import corpus
from ..data.loader import parse_sources, validation_batches
from ..data.shards import check_shards
from ..losses.lm import IGNORE_INDEX, CausalLMLoss
from ..models import Llama
from . import checkpoint as ckpt
from . import distributed, run_data
from .build import apply_sparsity, model_config, new_model
from .config import Config, ConfigError, apply_flags, config_from_dict
from .eval_sources import eval_specs
from .preflight import check_one_split, check_ranges
from .init_from import with_kept_source
from .runtime import autocast, compute_dtype


class Evaluator:
    """Mean loss per token on each source's validation batches (this rank's share, summed over
    ranks): the training sources, then the eval-only ones (--eval.sources). Every window counts
    once at any world size; a rank whose share is a batch short runs a batch of ignored targets
    instead, so that every rank runs the same forward passes (a sharded model's collectives)."""

    def __init__(self, cfg: Config, d: distributed.Dist, dtype: torch.dtype):
        self.d, self.dtype = d, dtype
        self.loss = CausalLMLoss(fused_linear_ce=cfg.loss.fused_linear_ce)  # plain CE: no distillation term
        self.sets, self.passes = {}, {}
        self.trained = [s.name for s in parse_sources(cfg.data.sources)]  # val_loss: their mean
        self.blank = torch.zeros(1, cfg.data.seq_len + 1, dtype=torch.long)
        for src in eval_specs(cfg):
            batches = validation_batches(
                src, cfg.data.seq_len, cfg.eval.batch_size, cfg.eval.batches, d.rank, d.world_size, cfg.data.tokenizer
            )
            passes = int(max(d.per_rank(len(batches))))
            if passes:
                self.sets[src.name], self.passes[src.name] = batches, passes

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        out = {}
        for name, batches in self.sets.items():
            total, count = torch.zeros((), dtype=torch.float64, device=self.d.device), 0
            for i in range(self.passes[name]):
                b = (batches[i] if i < len(batches) else self.blank).to(self.d.device)
                y = b[:, 1:] if i < len(batches) else torch.full_like(b[:, 1:], IGNORE_INDEX)
                with autocast(self.d.device, self.dtype):
                    total += model(b[:, :-1], y, loss=self.loss).double()
                count += int((y != IGNORE_INDEX).sum())
            s = self.d.all_sum(torch.stack([total, torch.tensor(count, dtype=torch.float64, device=self.d.device)]))
            out[name] = (s[0] / s[1]).item()
        return out


def load_model(
    checkpoint: str | Path, device: torch.device | str = "cpu", cfg: Config | None = None, seq_len: int = 0
) -> tuple[Llama, Config, Path]:
    """(the checkpoint's model with its weights, eval mode; the run's config; the checkpoint
    folder). `checkpoint`: a checkpoint folder or a run folder (its latest). The model is built
    for sequences of the longest of the run's, cfg's and seq_len, through the trainer's
    model_config and its checks (a model from a Hugging Face checkpoint: the ones `train` makes)."""
    path = ckpt.find_checkpoint(checkpoint)
    saved = config_from_dict(ckpt.read_meta(path)["config"])
    cfg = cfg or saved
    vocab, _ = run_data.run_vocab(saved, path)  # recorded: the model loads wherever its data is
    longest = max(saved.data.seq_len, cfg.data.seq_len, seq_len)
    sized = with_kept_source(replace(saved, data=replace(saved.data, seq_len=longest)), path)
    mcfg = model_config(sized, vocab)
    model = new_model(mcfg)
    model.to_empty(device=device)
    apply_sparsity(saved, model)  # the run's SparseLinear layers (their masks come with the state)
    ckpt.load_model_weights(path, model)
    model.init_buffers()
    return model.eval(), saved, path


def evaluate_checkpoint(checkpoint: str | Path, cfg: Config | None = None, flags: dict | None = None) -> dict:
    """Validation loss (nats per token) and perplexity of a checkpoint on cfg's data sources.
    cfg None: the run's own config, changed by `flags` (from config.parse_flags: `ember eval`)."""
    path = ckpt.find_checkpoint(checkpoint)
    if cfg is None:
        meta = ckpt.read_meta(path)["config"]
        saved, cfg = config_from_dict(meta), apply_flags(flags or {}, config_from_dict(meta))
        if cfg.model != saved.model:  # the checkpoint's weights fix the model
            changed = [f"model.{k}" for k, v in vars(cfg.model).items() if v != getattr(saved.model, k)]
            raise ConfigError(f"ember eval: {', '.join(changed)} cannot change: the model is the checkpoint's")
        check_ranges(cfg)  # a flag out of range is named, as ember train names it
        run_data.check_eval_data(cfg, flags or {}, path, "ember eval")
    d = distributed.Dist(device=distributed.pick_device(cfg.job.device))
    model, _, path = load_model(path, d.device, cfg)
    check_one_split(cfg)
    for spec in eval_specs(cfg):  # as training checks them: a shard cut short would shrink the validation set
        if spec.path != corpus.NAME:
            check_shards(spec.path, model.config.vocab_size)
    losses = Evaluator(cfg, d, compute_dtype(cfg, d.device))(model)
    if not losses:
        raise ValueError(f"ember eval: no validation data in {cfg.data.sources}")
    mean = sum(losses.values()) / len(losses)
    return {
        "checkpoint": str(path),
        "step": ckpt.read_meta(path)["step"],
        "val_loss": mean,
        "perplexity": math.exp(mean),
        "per_source": losses,
    }
