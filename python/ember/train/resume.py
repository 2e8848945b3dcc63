"""What a resumed run may change. Every config key is classified here: CHANGES keys take effect
when a run resumes with another value (the optimizer's hyperparameters by overriding the
checkpoint's param_groups, see restore_hyperparameters); FIXED keys must equal the checkpoint's,
or the resume is refused before anything is written, naming the flag. A new config key must be
added to one of the two (a test checks that every key is)."""

from __future__ import annotations

from .config import Config, ConfigError, config_from_dict
from .run_data import absolute_paths

# Keys that take effect on resume: they are read where the run is built, or restored by
# restore_hyperparameters over the checkpoint's optimizer param_groups and LR schedule.
CHANGES = frozenset(
    {
        "job.name",  # resuming into another run folder starts a branch there
        "job.dir",
        "job.deterministic",
        "job.device",  # checkpoints load on any device
        "training.steps",  # the LR schedule is stretched or cut to the new length
        "training.micro_batch_size",  # the same gradient, accumulated differently
        "training.max_norm",
        "training.dtype",
        "training.compile",
        "training.activation_checkpointing",
        "training.parallel",  # sharded checkpoints load under any parallelism and world size
        "training.hsdp_shard",
        "training.selftest",  # which kernels run, not what is computed
        "training.kernel_fallback",
        "optimizer.lr",
        "optimizer.betas",
        "optimizer.eps",
        "optimizer.weight_decay",
        "optimizer.momentum",
        "optimizer.scale",
        "optimizer.update_proj_gap",
        "lr_scheduler.warmup_steps",
        "lr_scheduler.decay",
        "lr_scheduler.decay_ratio",
        "lr_scheduler.min_lr_ratio",
        "loss.fused_linear_ce",  # the same loss by another kernel
        "float8.all_gather",  # what FSDP2 communicates, not what is trained
        "eval.every",
        "eval.batches",
        "eval.batch_size",
        "eval.sources",
        "eval.tasks",
        "eval.tasks_every",
        "eval.tasks_include_path",
        "eval.tasks_num_fewshot",
        "eval.tasks_limit",
        "data.mixing_every",  # the weights reached are in the checkpoint; later updates follow the new setting
        "data.mixing_eta",
        "data.mixing_batches",
        "data.skills_graph",
        "checkpoint.every",
        "checkpoint.keep",
        "checkpoint.resume",
        "checkpoint.export_safetensors",
        "checkpoint.async_save",
        "metrics.log_every",
        "metrics.progress",
        "metrics.tensorboard",
        "metrics.plot",
        "metrics.wandb",
        "metrics.wandb_project",
    }
)

# Keys a checkpoint cannot follow: the shapes of its model and optimizer state, the data and its
# order (the saved data position means nothing under another), what the weights are.
FIXED = frozenset(
    {
        "job.seed",
        *(f"model.{k}" for k in ("name", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden", "vocab_size")),
        "model.init_from",
        "data.sources",
        "data.tokenizer",
        "data.seq_len",
        "data.mixing",  # fixed weights and Skill-it's evolving ones are different data orders
        "training.batch_size",
        "optimizer.name",
        "optimizer.rank",
        "loss.token_weights",
        "loss.distill",  # its teacher is built from model.init_from
        "sparsity.target",
        "sparsity.method",
        "sparsity.block",
        "float8.recipe",
    }
)


def config_keys(cfg: Config | None = None) -> list[str]:
    """Every 'section.key' of the config."""
    return [f"{section}.{key}" for section, values in (cfg or Config()).to_dict().items() for key in values]


def check_same_run(cfg: Config, saved: dict, saved_step: int) -> None:
    """Refuse a resume that changes a FIXED key (all of them named), or that would train no step
    the checkpoint has not."""
    old = absolute_paths(config_from_dict(saved)).to_dict()  # a checkpoint from before runs named data absolutely
    new = cfg.to_dict()
    changed = [
        f"--{s}.{k}={_show(new[s][k])} (the checkpoint's: {_show(old[s][k])})"
        for s in new
        for k in new[s]
        if f"{s}.{k}" in FIXED and new[s][k] != old[s][k]
    ]
    if changed:
        raise ConfigError(
            "checkpoint.resume: these settings cannot change when a run resumes (they define its model, "
            f"optimizer state or data): {'; '.join(changed)}. Start a new run to change them."
        )
    if cfg.training.steps < saved_step:
        raise ConfigError(
            f"checkpoint.resume: training.steps {cfg.training.steps} is before the checkpoint's step {saved_step}"
        )


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def hyperparameters(optimizer, scheduler) -> tuple[list[dict], list[float]]:
    """The optimizer's param_group settings and the schedule's base learning rates as this run's
    config built them (call before loading a checkpoint over them)."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return groups, list(scheduler.base_lrs)


def restore_hyperparameters(optimizer, scheduler, built: tuple[list[dict], list[float]]) -> None:
    """After loading a checkpoint, which brings back its own param_groups and base learning
    rates: this run's settings again, and each group's learning rate at the restored step."""
    groups, base_lrs = built
    scheduler.base_lrs = list(base_lrs)
    for group, settings, base, factor in zip(optimizer.param_groups, groups, base_lrs, scheduler.lr_lambdas):
        group.update(settings)
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
