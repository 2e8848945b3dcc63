"""`ember skills-graph`: Skill-it's skills graph of data sources, estimated as the paper does.
From a checkpoint's weights, for each source i: train `steps` steps on source i alone, and
A_ij = source j's validation loss before − after (how much learning i helps j). The training is a
plain loop with the run's optimizer settings at its peak learning rate (a fresh optimizer state,
no schedule), one process; the losses are the trainer's Skill-it losses (data.mixing_batches
batches of eval.batch_size windows of each source's validation split)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .. import atomic
from ..data import corpus
from ..data.loader import PackedLoader, SourceSpec, parse_sources
from ..losses.lm import IGNORE_INDEX, CausalLMLoss
from . import checkpoint as ckpt
from . import distributed, run_data
from .build import apply_float8, build_optimizer
from .config import Config, ConfigError, apply_flags, config_from_dict
from .evaluate import Evaluator, load_model
from .online_mixing import short_names
from .runtime import autocast, compute_dtype

COMMAND = "ember skills-graph"


def _config(checkpoint: str, flags: dict, steps: int, out: str) -> tuple[Config, Path]:
    """The run's config changed by flags, and the checkpoint; every refusal before any training."""
    path = ckpt.find_checkpoint(checkpoint)
    meta = ckpt.read_meta(path)["config"]
    saved, cfg = config_from_dict(meta), apply_flags(flags, config_from_dict(meta))
    if cfg.model != saved.model:
        raise ConfigError(f"{COMMAND}: model.* cannot change: the model is the checkpoint's")
    if steps < 1:
        raise ConfigError(f"{COMMAND}: --steps must be >= 1, got {steps}")
    sizes = {"training.batch_size": cfg.training.batch_size, "eval.batch_size": cfg.eval.batch_size}
    for key, value in {**sizes, "data.mixing_batches": cfg.data.mixing_batches}.items():
        if value < 1:  # else a traceback from the loader or the evaluator, or "no validation window"
            raise ConfigError(f"{COMMAND}: --{key} must be >= 1, got {value}")
    if Path(out).exists():
        raise ConfigError(f"{COMMAND}: --out {out} exists: choose a new file (it is never overwritten)")
    if not Path(out).resolve().parent.is_dir():
        raise ConfigError(f"{COMMAND}: --out {out}: its folder does not exist")
    sources = parse_sources(cfg.data.sources)
    for s in sources:
        if s.path != corpus.NAME and not (Path(s.path) / "index.json").is_file():
            raise ConfigError(f"{COMMAND}: --data.sources: {s.path}: not a token folder (no index.json)")
    if len(sources) < 2:
        raise ConfigError(f"{COMMAND}: --data.sources names one source: a skills graph relates two or more")
    run_data.check_eval_data(cfg, flags, path, COMMAND)
    return run_data.absolute_paths(cfg), path  # the graph names its sources wherever it is used from


def _run_model(path: Path, d: distributed.Dist, cfg: Config):
    """The checkpoint's model as the run trains and evaluates it: Float8Linear blocks under --float8.recipe."""
    model = load_model(path, d.device, cfg)[0]
    apply_float8(cfg, model)
    return model


def _train_alone(model, specs: list[SourceSpec], i: int, cfg: Config, steps: int, d: distributed.Dist, dtype) -> None:
    """`steps` optimizer steps of the model on source i alone, its windows drawn as the trainer's
    loader draws them (its token budget's subset and epoch order are keyed by its place in the list)."""
    alone = [SourceSpec(s.path, weight=float(j == i), tokens=s.tokens) for j, s in enumerate(specs)]
    loader = PackedLoader(alone, cfg.data.seq_len, cfg.training.batch_size, cfg.job.seed, tokenizer=cfg.data.tokenizer)
    optimizer = build_optimizer(cfg, model)
    loss_fn = CausalLMLoss(fused_linear_ce=cfg.loss.fused_linear_ce)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for _ in range(steps):
        batch = loader.next_batch()
        x, y = batch["inputs"].to(d.device), batch["targets"].to(d.device)
        with autocast(d.device, dtype):
            loss = model(x, y, loss=loss_fn) / int((y != IGNORE_INDEX).sum())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.training.max_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def skills_graph(checkpoint: str, flags: dict, steps: int, out: str) -> dict:
    """Estimate the graph, write it to `out` (JSON: sources, graph, losses before) and return it."""
    cfg, path = _config(checkpoint, flags, steps, out)
    torch.manual_seed(cfg.job.seed)
    d = distributed.Dist(device=distributed.pick_device(cfg.job.device))
    dtype = compute_dtype(cfg, d.device)
    names = [s.name for s in parse_sources(cfg.data.sources)]
    mixing = dataclasses.replace(cfg.eval, batches=cfg.data.mixing_batches, sources="")
    evaluator = Evaluator(dataclasses.replace(cfg, eval=mixing), d, dtype)
    missing = [n for n in names if n not in evaluator.sets]
    if missing:
        raise ConfigError(f"{COMMAND}: no validation window of {cfg.data.seq_len + 1} tokens in {', '.join(missing)}")
    before = evaluator(_run_model(path, d, cfg))
    graph = []
    specs = parse_sources(cfg.data.sources)
    for i in range(len(specs)):
        model = _run_model(path, d, cfg)  # the same starting point for every source
        _train_alone(model, specs, i, cfg, steps, d, dtype)
        after = evaluator(model)
        graph.append([before[n] - after[n] for n in names])
    result = {
        "sources": names,
        "graph": graph,
        "loss_before": [before[n] for n in names],
        "steps": steps,
        "checkpoint": str(path),
    }
    atomic.write_json(out, result)
    return result


def format_graph(result: dict) -> str:
    """The matrix as a table: row i = trained on source i, column j = the drop in source j's loss."""
    short = short_names(result["sources"])
    labels = [short[n] for n in result["sources"]]
    width = max(10, *map(len, labels))
    lines = [" " * width + "".join(f"{x:>{width + 2}}" for x in labels)]
    for label, row in zip(labels, result["graph"]):
        lines.append(f"{label:<{width}}" + "".join(f"{v:>{width + 2}.4f}" for v in row))
    return "\n".join(lines)
