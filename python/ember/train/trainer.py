"""The training loop: `train(cfg)` runs one pre-training job (alone or as one rank of a torchrun
job) and returns a summary. Everything it writes goes into its run folder.

A run, top to bottom (the Trainer's methods, in the order they are called):
  check_config     reject a config that cannot run, before anything is made (preflight.py)
  set_up           device, seed and dtype; the run folder and the checkpoint to resume from
  build            data, evaluator, model, optimizer, LR schedule; their state when resuming
  open_run_folder  the folder, config.toml, the metrics log, the run's header
  run              per step: train_step, log_step, evaluate, checkpoint; then finish
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import os
import sys
import time
from pathlib import Path

import torch

from .. import atomic
from ..data.loader import PackedLoader, parse_sources, source_vocab
from ..kernel_check.training import keep_earlier_fallback
from ..losses.lm import IGNORE_INDEX
from . import checkpoint as ckpt
from . import distributed, faults, host, resume, run_data, run_info
from .build import build_loss, build_model, build_optimizer, build_scheduler, check_kernels, model_config
from .config import Config, ConfigError
from .evaluate import Evaluator
from .init_from import check_source_unchanged, keep_source
from .online_mixing import SkillitMixer
from .metrics import (
    MetricsLogger,
    card_name,
    format_line,
    optimizer_state_bytes,
    peak_flops,
    peak_memory_bytes,
    trim_metrics,
)
from .preempt import Preempted, StopSignal
from .preflight import check_config
from .run_lock import RunFolderLock
from .runtime import autocast, compute_dtype, set_determinism


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss or gradient norm, ...)."""


def train(cfg: Config) -> dict:
    """Run the job described by cfg; returns {run_dir, step, val_loss, train_loss, ...}. On
    SIGTERM/SIGINT it stops after the current step with a checkpoint and raises Preempted."""
    check_config(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    d = distributed.init(cfg.job.device)
    try:
        with StopSignal(verbose=d.is_main) as stop, RunFolderLock() as lock:
            trainer = Trainer(cfg, d, stop, lock)
            try:
                return trainer.run()
            finally:  # a run ended by an error frees its folder only once its background save is published
                trainer.checkpointer.settle()
    finally:
        distributed.shutdown()


class Trainer:
    """One run on this rank. The constructor sets up, builds and opens the run folder; run()
    trains to the last step (or to a stop request) and returns the summary. With a `lock`, rank 0
    holds the run folder against a second `ember train` from when it is known to the end of the run."""

    def __init__(self, cfg: Config, d: distributed.Dist, stop: StopSignal, lock: RunFolderLock | None = None):
        self.cfg, self.d, self.stop = run_data.absolute_paths(cfg), d, stop  # the run's data wherever it is used from
        self.lock = lock if d.is_main else None
        self.set_up()
        self.build()
        self.open_run_folder()

    def set_up(self) -> None:
        """Device, seed and dtype; the run folder and the checkpoint to resume from (nothing made yet)."""
        cfg, d = self.cfg, self.d
        self.kernel_check = check_kernels(cfg, d)  # refuses a failed kernel before anything is made
        if d.device.type == "cpu":
            host.keep_freed_memory()
        set_determinism(cfg, d.device)
        self.dtype = compute_dtype(cfg, d.device)
        self.run_dir, self.resume_from = _run_dir(cfg, d)
        self.auto_named = not cfg.job.name and not (cfg.checkpoint.resume and cfg.checkpoint.resume != "latest")
        if self.lock and not self.auto_named and self.run_dir.is_dir():
            self.lock.acquire(self.run_dir)  # no other run publishes, prunes or rewinds in it from now on
            self.run_dir, self.resume_from = _run_dir(cfg, d)  # as the run that held it last left it
        self.resume_from = d.broadcast(self.resume_from)  # rank 0's: every rank loads the same checkpoint
        self.saved = None  # the resumed checkpoint's config
        if self.resume_from is not None:
            meta = ckpt.read_meta(self.resume_from)
            self.saved = meta["config"]
            resume.check_same_run(cfg, meta["config"], meta["step"])
            run_data.check_resume(cfg, self.resume_from)
            check_source_unchanged(cfg, self.resume_from)
            if not cfg.training.selftest:
                keep_earlier_fallback(self.run_dir)

    def build(self) -> None:
        """The data loader, the evaluator, the model, the optimizer and the learning-rate
        schedule; their state from the checkpoint when resuming (self.start: the step reached)."""
        cfg, d = self.cfg, self.d
        sources = parse_sources(cfg.data.sources)
        vocab, _ = source_vocab(sources[0], cfg.data.tokenizer)
        self.loader = PackedLoader(
            sources,
            cfg.data.seq_len,
            cfg.training.batch_size,
            cfg.job.seed,
            d.rank,
            d.world_size,
            cfg.data.tokenizer,
            cfg.loss.token_weights or None,
        )
        self.evaluator = Evaluator(cfg, d, self.dtype)
        self.mixer = SkillitMixer(cfg, d, self.dtype, self.loader) if cfg.data.mixing == "skillit" else None
        self.mcfg = model_config(cfg, vocab)
        self.tasks = _task_evaluator(cfg, self.mcfg.max_seq_len, self.dtype)
        self.built = build_model(cfg, self.mcfg, d)
        self.wrapped, self.model = self.built.wrapped, self.built.model
        self.loss = build_loss(cfg, d.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.start = 0
        if self.resume_from is not None:
            built = resume.hyperparameters(self.optimizer, self.scheduler)
            self.start = ckpt.load(self.resume_from, self.model, self.optimizer, self.scheduler, self.loader, d)
            resume.restore_hyperparameters(self.optimizer, self.scheduler, built)  # this run's lr, weight decay...

    def open_run_folder(self) -> None:
        """The run folder (a resumed run's metrics cut back to its step), config.toml, the metrics
        logger, the header; then what every step needs to know."""
        d = self.d
        self.rewound = False  # set by _claim_run_folder (rank 0): a resume that set later checkpoints aside
        self.run_dir = Path(d.broadcast(str(self._claim_run_folder()) if d.is_main else None))
        # config.toml names the folder used (a timestamp, a resumed checkpoint's run), absolutely, and
        # continues it: `--config RUN/config.toml` from any directory, after a rewind too, goes on from
        # the run's newest checkpoint (not a fresh run elsewhere, not the rewind again), resumed or not
        job = dataclasses.replace(self.cfg.job, name=self.run_dir.name, dir=os.path.abspath(self.run_dir.parent))
        self.cfg = cfg = dataclasses.replace(
            self.cfg, job=job, checkpoint=dataclasses.replace(self.cfg.checkpoint, resume="latest")
        )
        self.log = MetricsLogger(
            self.run_dir,
            cfg.training.steps,
            self.start,
            d.is_main,
            cfg.metrics.progress,
            cfg.metrics.tensorboard,
            cfg.metrics.log_every,
            wandb=_wandb(cfg, None if self.rewound else self.saved),
        )
        self.resolved = cfg.to_dict()
        self.checkpointer = ckpt.Checkpointer(self.run_dir, d, cfg.checkpoint.keep, cfg.checkpoint.async_save)
        if d.is_main:
            atomic.write_text(self.run_dir / "config.toml", cfg.to_toml())
            run_data.save_tokenizer(cfg, self.run_dir)
            if cfg.model.init_from:
                keep_source(self.mcfg, self.run_dir)  # eval and export build this model, wherever the source goes
            if self.kernel_check:
                self.kernel_check.record(self.run_dir)
            run_info.print_header(cfg, d, self.model, self.dtype, self.run_dir, self.resume_from, self.start)
            if self.built.sparsity:
                run_info.print_sparsity(self.built.sparsity, self.run_dir)
            if cfg.float8.recipe:
                run_info.print_float8(cfg, self.model)
        self.tokens_per_step = cfg.training.batch_size * cfg.data.seq_len
        self.flops_per_token = self.model.flops_per_token(cfg.data.seq_len)
        # GPU: MFU against the card's bf16 peak; CPU: utilization against its own measured GEMM rate
        self.peak = peak_flops(card_name(d.device)) if d.device.type == "cuda" else host.gemm_flops()
        self.per_rank = cfg.training.batch_size // d.world_size
        self.micro = cfg.training.micro_batch_size or self.per_rank
        self.params = list(self.model.parameters())
        self.max_norm = cfg.training.max_norm or float("inf")
        self.summary = {"run_dir": str(self.run_dir), "step": self.start, "val_loss": None, "train_loss": None}

    def _claim_run_folder(self) -> Path:
        """(rank 0) The run folder, holding one history: a timestamp-named folder made by this run
        alone (another name when a run started in the same second took it); a fresh run's metrics
        started anew; a resumed run's cut back to its step, and a rewound history's later
        checkpoints and metrics set aside (kept, and said where)."""
        run_dir = ckpt.new_folder(self.run_dir) if self.auto_named else self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.lock:
            self.lock.acquire(run_dir)
        if self.resume_from is None:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            return run_dir
        aside = ckpt.set_aside_after(run_dir, self.start)
        self.rewound = aside is not None
        trim_metrics(run_dir, self.start, dropped_to=aside)
        if aside is not None:
            later = ", ".join(p.name for p in sorted((aside / "checkpoints").iterdir()))
            print(
                f"ember train: rewinding {run_dir} to step {self.start}: its later checkpoints ({later}), "
                f"their metrics and export are kept in {aside}",
                flush=True,
            )
        return run_dir

    def run(self) -> dict:
        """Steps start+1 .. training.steps: train, log, evaluate, checkpoint; then finish."""
        cfg, last_step = self.cfg, self.cfg.training.steps
        if self.start == 0:
            self.evaluate(0)
            if self.mixer:
                self.log.record(self.mixer.row(0))
            if self.tasks and self.tasks.due(0, last_step):
                self.evaluate_tasks(0)
        self.t_last, self.steps_since = time.perf_counter(), 0  # tokens/s over the steps since the last log line
        if self.d.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.d.device)
        for step in range(self.start + 1, last_step + 1):
            loss, grad_norm, lr, stop = self.train_step(step)
            self.steps_since += 1
            self.summary.update(step=step, train_loss=loss)
            if step % cfg.metrics.log_every == 0 or step == last_step or step == self.start + 1:
                self.log_step(step, loss, grad_norm, lr)
            paused = time.perf_counter()  # evaluation and saving do not count as training time
            if self.mixer and self.mixer.due(step):  # before the checkpoint, which holds the weights
                self.update_mixture(step)
            if cfg.eval.every and step % cfg.eval.every == 0 or step == last_step:
                self.evaluate(step)
            if self.tasks and self.tasks.due(step, last_step):
                self.evaluate_tasks(step)
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 or step == last_step or stop:
                saved = self.checkpoint(step, async_ok=not stop)
            if stop:
                self.log.close()
                raise _preempted(self.stop, step, saved, self.run_dir, self.d)
            self.t_last += time.perf_counter() - paused
        return self.finish()

    def train_step(self, step: int) -> tuple[float, float, float, bool]:
        """One optimizer step on the next global batch. Returns (loss per token, gradient norm,
        the learning rate it used, whether any rank was asked to stop); a non-finite loss or
        gradient norm raises TrainingError before the update."""
        loss_sum, n_global = self._forward_backward(self.loader.next_batch())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        # A stop request travels with the loss: every rank learns of it at the same step.
        votes = torch.full(
            (1,), float(self.stop.received is not None), dtype=torch.float64, device=self.d.device
        )  # no host sync
        reduced = self.d.all_sum(torch.cat([loss_sum.double().reshape(1), votes]))
        loss = reduced[0] / n_global
        loss_v, gnorm_v, stop_v = torch.stack([loss.float(), grad_norm.float(), reduced[1].float()]).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(gnorm_v)):
            last = ckpt.checkpoint_dirs(self.run_dir)
            raise TrainingError(
                f"step {step}: non-finite {'loss' if not math.isfinite(loss_v) else 'gradient norm'} "
                f"(loss {loss_v}, grad norm {gnorm_v}); the update was not applied and the run stops. "
                f"Last checkpoint: {last[-1] if last else 'none'}"
            )
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        faults.crash_point(f"step:{step}")
        return loss_v, gnorm_v, lr, bool(stop_v)

    def _forward_backward(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Gradients of Σ loss / N_global (N_global: the valid target tokens of all ranks), one
        micro-batch at a time. Returns (this rank's Σ loss, detached; N_global)."""
        d, device = self.d, self.d.device
        x, y = batch["inputs"].to(device, non_blocking=True), batch["targets"].to(device, non_blocking=True)
        w = batch["weights"].to(device, non_blocking=True) if batch["weights"] is not None else None
        n_global = d.all_sum([(batch["targets"] != IGNORE_INDEX).sum().item()])[
            0
        ]  # (counted on the host copy: no sync)
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        for i in range(0, self.per_rank, self.micro):
            last = i + self.micro >= self.per_rank
            with _grad_sync(self.wrapped, last), autocast(device, self.dtype):
                part = self.wrapped(
                    x[i : i + self.micro],
                    y[i : i + self.micro],
                    None if w is None else w[i : i + self.micro],
                    loss=self.loss,
                )
            # DDP and FSDP average gradients over ranks; scale so the result is Σ loss / N_global.
            (part * (d.world_size / n_global)).backward()
            loss_sum += part.detach()
        return loss_sum, n_global

    def log_step(self, step: int, loss: float, grad_norm: float, lr: float) -> None:
        """A metrics record and progress line: loss, throughput since the last one, MFU (GPU) or
        CPU utilization, memory."""
        device = self.d.device
        now = time.perf_counter()
        tps = self.tokens_per_step * self.steps_since / (now - self.t_last)
        self.t_last, self.steps_since = now, 0
        util = self.flops_per_token * tps / (self.peak * self.d.world_size) if self.peak else None
        m = {
            "step": step,
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": lr,
            "tokens_per_s": tps,
            "mfu" if device.type == "cuda" else "cpu_util": util,
            "mem_gib": peak_memory_bytes(device) / 2**30 if device.type == "cuda" else None,
        }
        m.update(_memory(self.optimizer, device, self.d))
        self.log.record(m)
        self.log.progress(step, format_line(m))

    def evaluate(self, step: int) -> None:
        """Validation loss on every eval source; val_loss is the mean over the trained ones."""
        if not self.evaluator.sets:
            return
        losses = self.evaluator(self.wrapped)
        main = [v for k, v in losses.items() if k in self.evaluator.trained] or list(losses.values())
        self.summary["val_loss"] = sum(main) / len(main)
        row = {"step": step, "val_loss": self.summary["val_loss"]}
        if len(losses) > 1:
            row.update({f"val_loss/{k}": v for k, v in losses.items()})
        self.log.record(row)
        self.log.message(f"step {step:>6}  val loss {self.summary['val_loss']:.4f}")

    def update_mixture(self, step: int) -> None:
        """Skill-it: new source weights from the sources' validation losses, logged as mix/<source>."""
        self.log.record(self.mixer.step(self.wrapped, step))
        self.log.message(f"step {step:>6}  mix {self.mixer.describe()}")

    def evaluate_tasks(self, step: int) -> None:
        """--eval.tasks: lm-evaluation-harness tasks on the model (every rank runs them all: a
        sharded model's collectives match), logged as task/<name>/<metric>."""
        values = self.tasks(self.model)
        if values:
            self.log.record({"step": step, **values})
            shown = "  ".join(f"{k.removeprefix('task/')} {v:.4f}" for k, v in values.items())
            self.log.message(f"step {step:>6}  {shown}")

    def checkpoint(self, step: int, async_ok: bool = True) -> Path | None:
        """Save the step's state (in a background thread with --checkpoint.async_save, unless a
        stop is due); returns the checkpoint folder."""
        return self.checkpointer.save(
            step, self.model, self.optimizer, self.scheduler, self.loader, self.resolved, async_ok=async_ok
        )

    def finish(self) -> dict:
        """Wait for background saves; model.safetensors and the plots if asked; the summary."""
        cfg, d, summary = self.cfg, self.d, self.summary
        self.checkpointer.wait()
        if cfg.checkpoint.export_safetensors:
            summary["safetensors"] = str(
                ckpt.export_safetensors(self.model, self.run_dir / "model.safetensors", self.mcfg.to_dict(), d)
            )
        self.log.close()
        if d.is_main and cfg.metrics.plot:
            from .plot import plot_run

            summary["plots"] = [str(p) for p in plot_run(self.run_dir)]
        if d.is_main:
            last = ckpt.checkpoint_dirs(self.run_dir)
            summary["checkpoint"] = str(last[-1]) if last else None
            val = f"{summary['val_loss']:.4f}" if summary["val_loss"] is not None else "-"
            print(
                f"ember train: done at step {summary['step']}: val loss {val}. Run folder {self.run_dir} "
                f"(checkpoint {summary['checkpoint']}, plots {', '.join(Path(p).name for p in summary.get('plots', []))})",
                flush=True,
            )
        return summary


def _run_dir(cfg: Config, d: distributed.Dist) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None)."""
    root = Path(cfg.job.dir)
    resume = cfg.checkpoint.resume
    if resume and resume != "latest":
        return _resume_target(cfg, ckpt.find_checkpoint(resume))
    if not cfg.job.name:  # made exclusively by open_run_folder
        return root / d.broadcast(timestamp()), None
    run_dir = root / cfg.job.name
    existing = ckpt.checkpoint_dirs(run_dir)
    if resume == "latest":
        return run_dir, existing[-1] if existing else None
    if existing:
        raise ConfigError(
            f"run folder {run_dir} already holds checkpoints: resume it with --checkpoint.resume, or choose another --job.name"
        )
    return run_dir, None


def _resume_target(cfg: Config, found: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for --checkpoint.resume=PATH: the checkpoint's own run folder, or
    --job.name's, which must not hold checkpoints of another history."""
    home = found.parent.parent if found.parent.name == "checkpoints" else None
    if home is not None and home.parent.name == "abandoned" and not cfg.job.name:  # kept as it was, not a run folder
        raise ConfigError(
            f"checkpoint.resume: {found} is of a history set aside by a rewind ({home}): continue it in a run "
            "folder of its own with --job.name"
        )
    if not cfg.job.name and home is None:
        raise ConfigError(
            f"checkpoint.resume: {found} is not inside a run folder (RUN/checkpoints/step-N): name the run to continue it in with --job.name"
        )
    run_dir = Path(cfg.job.dir) / cfg.job.name if cfg.job.name else home
    if (home is None or run_dir.resolve() != home.resolve()) and ckpt.checkpoint_dirs(run_dir):
        raise ConfigError(
            f"checkpoint.resume: {found} is not a checkpoint of {run_dir}, which holds checkpoints of its own: "
            "choose another --job.name to branch into a new run folder"
        )
    return run_dir, found


def _task_evaluator(cfg: Config, max_length: int, dtype: torch.dtype):
    """The --eval.tasks evaluator (None without tasks; lm-eval is an optional dependency)."""
    if not cfg.eval.tasks:
        return None
    from ..evals.run import TaskEvaluator

    return TaskEvaluator(cfg, max_length, dtype)


def _wandb(cfg: Config, saved: dict | None) -> dict | None:
    """The W&B run's settings with --metrics.wandb, else None. A resume continues the W&B run
    that its checkpoint's run logged to (W&B on, the same project); otherwise, as after a rewind
    (saved None), a new W&B run is given the steps kept first: the other lacks some of them."""
    if not cfg.metrics.wandb:
        return None
    before = (saved or {}).get("metrics", {})
    continues = bool(before.get("wandb")) and before.get("wandb_project") == cfg.metrics.wandb_project
    return {"project": cfg.metrics.wandb_project, "config": cfg.to_dict(), "resume": continues}


def timestamp() -> str:
    """The name of a run started now without --job.name."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _grad_sync(wrapped, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch (DDP); FSDP2 modules take a
    flag instead."""
    if hasattr(wrapped, "no_sync"):
        return contextlib.nullcontext() if sync else wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def _memory(optimizer, device: torch.device, d: distributed.Dist) -> dict:
    """Peak memory of every rank, and the largest optimizer state one rank holds: what sharding saves."""
    peaks = d.per_rank(peak_memory_bytes(device))
    return {
        "peak_mem_gib_per_rank": [round(b / 2**30, 4) for b in peaks],
        "optimizer_state_bytes": int(max(d.per_rank(optimizer_state_bytes(optimizer)))),
    }


def _preempted(stop: StopSignal, step: int, checkpoint: Path | None, run_dir: Path, d: distributed.Dist) -> Preempted:
    """The stop after `step`: said once (rank 0), with the flag that continues the run."""
    why = stop.received or "a stop signal on another rank"
    message = f"ember train: stopped by {why} after step {step}; checkpoint {checkpoint}. To continue, run the same command with --checkpoint.resume={run_dir}"
    if d.is_main:
        print(message, file=sys.stderr, flush=True)
    return Preempted(message, step)
