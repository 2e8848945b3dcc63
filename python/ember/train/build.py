"""The one place where the trainer builds what its switches change: the model (and how it is
parallelized), the loss, the optimizer, the learning-rate schedule. A new feature's switch goes into
config.py and is read here."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.distill import Distillation
from ..losses.lm import CausalLMLoss
from ..models import CONFIGS, Llama, LlamaConfig
from .config import Config
from .distributed import Dist


def model_config(cfg: Config, vocab_size: int) -> LlamaConfig:
    if cfg.model.init_from:  # the checkpoint's shape and vocabulary
        from .init_from import init_model_config

        return init_model_config(cfg)
    base = CONFIGS[cfg.model.name]
    changes = {
        k: getattr(cfg.model, k)
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden")
        if getattr(cfg.model, k)
    }
    return base.replace(**changes, vocab_size=cfg.model.vocab_size or vocab_size, max_seq_len=cfg.data.seq_len)


@dataclass
class BuiltModel:
    """What build_model made: the module to train (wrapped for DDP under torchrun, else the model
    itself), the plain Llama inside, and the pruning report of a sparse run (else None)."""

    wrapped: nn.Module
    model: Llama
    sparsity: dict | None = None


def new_model(mcfg: LlamaConfig, *, activation_checkpointing: bool = False) -> Llama:
    """A Llama on the meta device (recomputing each block in the backward when asked)."""
    with torch.device("meta"):
        return Llama(mcfg, activation_checkpointing=activation_checkpointing)


def build_loss(cfg: Config, device: torch.device) -> CausalLMLoss:
    """The run's training loss (--loss.fused_linear_ce, --loss.distill with its teacher), owned by
    the Trainer and passed to the model's forward."""
    distill = None
    if cfg.loss.distill:
        from .init_from import load_teacher

        distill = Distillation(load_teacher(cfg, device), cfg.loss.distill)
    return CausalLMLoss(fused_linear_ce=cfg.loss.fused_linear_ce, distill=distill)


def build_model(cfg: Config, mcfg: LlamaConfig, d: Dist) -> BuiltModel:
    """The model to train, built on the meta device, sharded (FSDP2) if asked, then materialized
    and initialized (or loaded from --model.init_from), and wrapped for DDP if asked."""
    model = new_model(mcfg, activation_checkpointing=cfg.training.activation_checkpointing)
    apply_float8(cfg, model)
    masks, report = apply_sparsity(cfg, model)  # the layers and the report now, the masks' values after to_empty
    if d.enabled and cfg.training.parallel in ("fsdp", "hsdp"):
        from torch.distributed.fsdp import fully_shard

        mesh = shard_mesh(cfg, d)
        for layer in model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    model.to_empty(device=d.device)
    if cfg.model.init_from:
        from .init_from import load_init_from

        load_init_from(model, cfg)
    else:
        _init_weights(model, cfg.job.seed)
    _apply_masks(model, masks)
    if cfg.training.compile:
        for layer in model.layers:
            layer.compile()  # in place: parameter names stay those of the plain model
    wrapped = model
    if d.enabled and cfg.training.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[d.device] if d.device.type == "cuda" else None)
    return BuiltModel(wrapped, model, report)


def hsdp_shard_size(cfg: Config, world_size: int) -> int:
    return cfg.training.hsdp_shard or int(os.environ.get("LOCAL_WORLD_SIZE", world_size))


def shard_mesh(cfg: Config, d: Dist):
    """FSDP2's device mesh: 1-D over all ranks (fsdp), or 2-D (replicas × shards) for hsdp, which
    FSDP2 turns into sharding within a group and gradient all-reduce across groups."""
    from torch.distributed.device_mesh import init_device_mesh

    if cfg.training.parallel == "fsdp":
        return init_device_mesh(d.device.type, (d.world_size,))
    shard = hsdp_shard_size(cfg, d.world_size)
    return init_device_mesh(d.device.type, (d.world_size // shard, shard), mesh_dim_names=("replicate", "shard"))


def apply_sparsity(cfg: Config, model: Llama) -> tuple[dict, dict | None]:
    """--sparsity.*: random pruning at initialization (Linear layers become SparseLinear with
    fixed masks, reproducible from the run's seed). Returns (the bool masks by layer name, the
    pruning report; ({}, None) for a dense run): on a meta model the masks are written by
    _apply_masks, after the model is sharded and materialized."""
    sp = cfg.sparsity
    if sp.target <= 0:
        return {}, None
    from ..sparse.prune import draw_masks, random_prune

    masks = draw_masks(model, sp.target, sp.method, block=sp.block or None, seed=cfg.job.seed)
    report = random_prune(model, sp.target, sp.method, block=sp.block or None, seed=cfg.job.seed, masks=masks)
    return masks, report


def apply_float8(cfg: Config, model: Llama) -> None:
    """--float8.recipe: the blocks' Linear layers become Float8Linear (the head stays: it runs in
    the fused linear cross-entropy). Done on the meta model, before sharding; parameters and
    checkpoints stay those of the plain model. --float8.all_gather: their weights' local shards
    become Float8ShardedWeight, which FSDP2 all-gathers in fp8 (before fully_shard, which shards
    those tensors)."""
    if cfg.float8.recipe:
        from ..float8 import convert_to_float8_training, enable_fp8_all_gather

        convert_to_float8_training(model.layers, cfg.float8.recipe)
        if cfg.float8.all_gather and cfg.training.parallel in ("fsdp", "hsdp"):
            enable_fp8_all_gather(model.layers)


@torch.no_grad()
def _init_weights(model: Llama, seed: int) -> None:
    """Every rank draws the full tensors from the same seed; a sharded parameter keeps its shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        model.init_weights(seed)
        return
    with torch.device("meta"):
        shadow = Llama(model.config)
    shadow.to_empty(device="cpu").init_weights(seed)
    full = dict(shadow.named_parameters())
    for name, p in model.named_parameters():
        p.copy_(distribute_tensor(full[name].to(p.device_mesh.device_type), p.device_mesh, p.placements))
    model.init_buffers()


@torch.no_grad()
def _apply_masks(model: Llama, masks: dict[str, torch.Tensor]) -> None:
    """The pruned layers' masks (replicated on every rank: 1 bit a weight) into their buffers,
    and zeros where they mask; a sharded weight masks its own rows, with no communication."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    from ..ops import pack_mask

    for name, mask in masks.items():
        layer = model.get_submodule(name)
        layer.mask.copy_(pack_mask(mask.to(layer.mask.device), layer.block))
        w = layer.weight
        keep = mask.to(w.device if not isinstance(w, DTensor) else w.to_local().device, w.dtype)
        if isinstance(w, DTensor):
            keep = distribute_tensor(keep, w.device_mesh, w.placements, src_data_rank=None)
        w.mul_(keep)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optimizer
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=True)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    if o.name in ("apollo", "apollo_mini"):
        from ..optim import Apollo, apollo_param_groups

        mini = o.name == "apollo_mini"
        lowrank, rest = apollo_param_groups(
            model,
            rank=o.rank or (1 if mini else 256),
            scale=o.scale or (128.0 if mini else 1.0),
            scale_type="tensor" if mini else "channel",
            update_proj_gap=o.update_proj_gap,
            weight_decay=o.weight_decay,
        )
        # As for AdamW: decay on 2-D weights only (embeddings and an untied head keep it).
        rest_2d = [p for p in rest["params"] if p.ndim >= 2]
        rest_1d = [p for p in rest["params"] if p.ndim < 2]
        groups = [lowrank, {**rest, "params": rest_2d}, {**rest, "params": rest_1d, "weight_decay": 0.0}]
        return Apollo([g for g in groups if g["params"]], lr=o.lr, betas=o.betas, eps=o.eps, seed=cfg.job.seed)
    raise ValueError(f"optimizer.name {o.name!r}")  # check_config() rejects it first


def lr_factor(step: int, cfg: Config) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based): the last step
    runs at min_lr_ratio (except "constant")."""
    s, total = cfg.lr_scheduler, cfg.training.steps
    if step < s.warmup_steps:
        return (step + 1) / s.warmup_steps
    lo = s.min_lr_ratio
    if s.decay == "constant":
        return 1.0
    if s.decay == "wsd":
        decay_steps = max(1, round(total * s.decay_ratio))
        start = max(total - decay_steps, s.warmup_steps)
        p = min(1.0, max(0.0, (step - start) / max(1, total - 1 - start)))
        return 1.0 - (1.0 - lo) * p
    p = min(1.0, (step - s.warmup_steps) / max(1, total - 1 - s.warmup_steps))
    if s.decay == "linear":
        return 1.0 - (1.0 - lo) * p
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * p))


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def kernel_families(cfg: Config) -> list[str]:
    """The kernel families this run calls: cross_entropy for the fused head, float8, APOLLO, sparsity."""
    uses = {
        "float8": bool(cfg.float8.recipe),
        "cross_entropy": cfg.loss.fused_linear_ce,
        "apollo": cfg.optimizer.name.startswith("apollo"),
        "sparse": cfg.sparsity.target > 0,
    }
    return [family for family, used in uses.items() if used]


def check_kernels(cfg: Config, d: Dist):
    """--training.selftest, --training.kernel_fallback: the run's kernels checked on this rank's
    device before anything is made (ember.kernel_check.training); None when skipped."""
    families = kernel_families(cfg)
    if not cfg.training.selftest or not families:
        return None
    from ..kernel_check.training import check_on_every_rank

    return check_on_every_rank(families, d, cfg.training.kernel_fallback)
