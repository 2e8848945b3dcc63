"""The training loop: `train(cfg)` runs one pre-training job (alone or as one rank of a torchrun
job) and returns a summary. Everything it writes goes into its run folder."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
import time
from pathlib import Path

import torch

from ..data.loader import PackedLoader, parse_sources, source_vocab, validation_batches
from ..losses.lm import IGNORE_INDEX
from . import checkpoint as ckpt
from . import distributed, faults, host
from .build import build_model, build_optimizer, build_scheduler, model_config
from .config import Config, ConfigError, config_from_dict
from .metrics import (MetricsLogger, card_name, format_line, optimizer_state_bytes, peak_flops, peak_memory_bytes,
                      trim_metrics)
from .preempt import Preempted, StopSignal
from .validate import validate


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss or gradient norm, ...)."""


def compute_dtype(cfg: Config, device: torch.device) -> torch.dtype:
    choice = cfg.training.dtype
    if choice == "auto":
        choice = "bf16" if device.type == "cuda" else "fp32"
    return torch.bfloat16 if choice == "bf16" else torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_determinism(cfg: Config, device: torch.device) -> None:
    torch.manual_seed(cfg.job.seed)
    if cfg.job.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)


def _run_dir(cfg: Config, d: distributed.Dist) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None)."""
    root = Path(cfg.job.dir)
    resume = cfg.checkpoint.resume
    if resume and resume != "latest":
        found = ckpt.find_checkpoint(resume)
        return (root / cfg.job.name if cfg.job.name else found.parent.parent), found
    name = cfg.job.name or d.broadcast(datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    run_dir = root / name
    existing = ckpt.checkpoint_dirs(run_dir)
    if resume == "latest":
        return run_dir, existing[-1] if existing else None
    if existing:
        raise ConfigError(f"run folder {run_dir} already holds checkpoints: resume it with --checkpoint.resume, "
                          f"or choose another --job.name")
    return run_dir, None


class Evaluator:
    def __init__(self, cfg: Config, d: distributed.Dist, dtype: torch.dtype):
        self.d, self.dtype = d, dtype
        from .eval_sources import eval_specs

        self.sets = {}
        self.trained = [s.name for s in parse_sources(cfg.data.sources)]  # val_loss: their mean
        for src in eval_specs(cfg):
            batches = validation_batches(src, cfg.data.seq_len, cfg.eval.batch_size, cfg.eval.batches, d.rank, d.world_size,
                                         cfg.data.tokenizer)
            if batches:
                self.sets[src.name] = batches

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        out = {}
        for name, batches in self.sets.items():
            total, count = torch.zeros((), dtype=torch.float64, device=self.d.device), 0
            for b in batches:
                b = b.to(self.d.device)
                with autocast(self.d.device, self.dtype):
                    total += model(b[:, :-1], b[:, 1:]).double()
                count += b[:, 1:].numel()
            s = self.d.all_sum(torch.stack([total, torch.tensor(count, dtype=torch.float64, device=self.d.device)]))
            out[name] = (s[0] / s[1]).item()
        return out


def train(cfg: Config) -> dict:
    """Run the job described by cfg; returns {run_dir, step, val_loss, train_loss, ...}. On
    SIGTERM/SIGINT it stops after the current step with a checkpoint and raises Preempted."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    validate(cfg, world)
    d = distributed.init(cfg.job.device)
    try:
        with StopSignal(verbose=d.is_main) as stop:
            return _train(cfg, d, stop)
    finally:
        distributed.shutdown()


def _train(cfg: Config, d: distributed.Dist, stop: StopSignal) -> dict:
    device = d.device
    if device.type == "cpu":
        host.keep_freed_memory()
    set_determinism(cfg, device)
    dtype = compute_dtype(cfg, device)
    run_dir, resume_from = _run_dir(cfg, d)
    if resume_from is not None:
        _check_same_run(cfg, ckpt.read_meta(resume_from)["config"])

    sources = parse_sources(cfg.data.sources)
    vocab, _ = source_vocab(sources[0], cfg.data.tokenizer)
    loader = PackedLoader(sources, cfg.data.seq_len, cfg.training.batch_size, cfg.job.seed, d.rank, d.world_size,
                          cfg.data.tokenizer, cfg.loss.token_weights or None)
    evaluate = Evaluator(cfg, d, dtype)
    mcfg = model_config(cfg, vocab)
    wrapped, model = build_model(cfg, mcfg, d)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    start = 0
    if resume_from is not None:
        start = ckpt.load(resume_from, model, optimizer, scheduler, loader, d)

    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_from is not None:
            trim_metrics(run_dir, start)
    d.barrier()
    log = MetricsLogger(run_dir, cfg.training.steps, start, d.is_main, cfg.metrics.progress, cfg.metrics.tensorboard,
                        cfg.metrics.log_every)
    resolved = cfg.to_dict()
    if d.is_main:
        ckpt.write_atomic(run_dir / "config.toml", cfg.to_toml().encode())
        print(f"ember train: run folder {run_dir}")
        print(cfg.to_toml().rstrip())
        print(f"# model {cfg.model.init_from or cfg.model.name}: {model.num_params() / 1e6:.2f}M parameters | device {device} x {d.world_size} "
              f"({cfg.training.parallel if d.enabled else 'single process'}) | {dtype} | "
              f"{cfg.training.batch_size * cfg.data.seq_len} tokens/step"
              + (f" | resuming {resume_from} at step {start}" if resume_from else ""), flush=True)
        if device.type == "cpu":
            print(f"# CPU: {torch.get_num_threads()} threads, fp32 GEMM {host.gemm_flops() / 1e9:.0f} GFLOP/s "
                  f"(measured; 'util' is the model's FLOP/s against it)", flush=True)
        if model.sparsity_report:
            _print_sparsity(model.sparsity_report, run_dir)
        if cfg.float8.recipe:
            from ..float8 import Float8Linear

            fp8 = [n for n, m in model.named_modules() if isinstance(m, Float8Linear)]
            dense = [n for n, m in model.layers.named_modules() if type(m) is torch.nn.Linear]
            print(f"# float8 {cfg.float8.recipe}: {len(fp8)} Linear layers run in fp8"
                  + (f", {len(dense)} stay bf16/fp32 (dims not multiples of 16)" if dense else ""))

    tokens_per_step = cfg.training.batch_size * cfg.data.seq_len
    flops_token = model.flops_per_token(cfg.data.seq_len)
    # GPU: MFU against the card's bf16 peak; CPU: utilization against its own measured GEMM rate
    peak = peak_flops(card_name(device)) if device.type == "cuda" else host.gemm_flops()
    per_rank = cfg.training.batch_size // d.world_size
    micro = cfg.training.micro_batch_size or per_rank
    params = list(model.parameters())
    max_norm = cfg.training.max_norm or float("inf")
    summary = {"run_dir": str(run_dir), "step": start, "val_loss": None, "train_loss": None}

    def run_eval(step):
        if not evaluate.sets:
            return
        losses = evaluate(wrapped)
        main = [v for k, v in losses.items() if k in evaluate.trained] or list(losses.values())
        summary["val_loss"] = sum(main) / len(main)
        row = {"step": step, "val_loss": summary["val_loss"]}
        if len(losses) > 1:
            row.update({f"val_loss/{k}": v for k, v in losses.items()})
        log.record(row)
        log.message(f"step {step:>6}  val loss {summary['val_loss']:.4f}")

    if start == 0:
        run_eval(0)
    t_last, steps_since = time.perf_counter(), 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(start + 1, cfg.training.steps + 1):
        batch = loader.next_batch()
        x, y = batch["inputs"].to(device, non_blocking=True), batch["targets"].to(device, non_blocking=True)
        w = batch["weights"].to(device, non_blocking=True) if batch["weights"] is not None else None
        n_global = d.all_sum([(batch["targets"] != IGNORE_INDEX).sum().item()])[0]  # (counted on the host copy: no sync)
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        for i in range(0, per_rank, micro):
            last = i + micro >= per_rank
            with _grad_sync(wrapped, last), autocast(device, dtype):
                part = wrapped(x[i : i + micro], y[i : i + micro], None if w is None else w[i : i + micro])
            # DDP and FSDP average gradients over ranks; scale so the result is Σ loss / N_global.
            (part * (d.world_size / n_global)).backward()
            loss_sum += part.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        # A stop request travels with the loss: every rank learns of it at the same step.
        votes = torch.full((1,), float(stop.received is not None), dtype=torch.float64, device=device)  # no host sync
        reduced = d.all_sum(torch.cat([loss_sum.double().reshape(1), votes]))
        loss = reduced[0] / n_global
        loss_v, gnorm_v, stop_v = torch.stack([loss.float(), grad_norm.float(), reduced[1].float()]).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(gnorm_v)):
            last = ckpt.checkpoint_dirs(run_dir)
            raise TrainingError(f"step {step}: non-finite {'loss' if not math.isfinite(loss_v) else 'gradient norm'} "
                                f"(loss {loss_v}, grad norm {gnorm_v}); the update was not applied and the run stops. "
                                f"Last checkpoint: {last[-1] if last else 'none'}")
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        faults.crash_point(f"step:{step}")
        steps_since += 1
        summary.update(step=step, train_loss=loss_v)

        if step % cfg.metrics.log_every == 0 or step == cfg.training.steps or step == start + 1:
            now = time.perf_counter()
            tps = tokens_per_step * steps_since / (now - t_last)
            t_last, steps_since = now, 0
            m = {"step": step, "loss": loss_v, "grad_norm": gnorm_v, "lr": lr, "tokens_per_s": tps,
                 "mfu" if device.type == "cuda" else "cpu_util": flops_token * tps / (peak * d.world_size) if peak else None,
                 "mem_gib": peak_memory_bytes(device) / 2**30 if device.type == "cuda" else None}
            m.update(_memory(optimizer, device, d))
            log.record(m)
            log.progress(step, format_line(m))
        paused = time.perf_counter()  # evaluation and saving do not count as training time
        if cfg.eval.every and step % cfg.eval.every == 0 or step == cfg.training.steps:
            run_eval(step)
        if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 or step == cfg.training.steps or stop_v:
            saved = ckpt.save(run_dir, step, model, optimizer, scheduler, loader, resolved, d, cfg.checkpoint.keep,
                              async_save=cfg.checkpoint.async_save and not stop_v)
        if stop_v:
            log.close()
            raise _preempted(stop, step, saved, run_dir, d)
        t_last += time.perf_counter() - paused

    ckpt.finish_saves(d)
    if cfg.checkpoint.export_safetensors:
        summary["safetensors"] = str(ckpt.export_safetensors(model, run_dir / "model.safetensors", mcfg.to_dict(), d))
    log.close()
    if d.is_main and cfg.metrics.plot:
        from .plot import plot_run

        summary["plots"] = [str(p) for p in plot_run(run_dir)]
    if d.is_main:
        last = ckpt.checkpoint_dirs(run_dir)
        summary["checkpoint"] = str(last[-1]) if last else None
        val = f"{summary['val_loss']:.4f}" if summary["val_loss"] is not None else "-"
        print(f"ember train: done at step {summary['step']}: val loss {val}. Run folder {run_dir} "
              f"(checkpoint {summary['checkpoint']}, plots {', '.join(Path(p).name for p in summary.get('plots', []))})", flush=True)
    return summary


def _memory(optimizer, device: torch.device, d: distributed.Dist) -> dict:
    """Peak memory of every rank, and the largest optimizer state one rank holds: what sharding saves."""
    peaks = d.per_rank(peak_memory_bytes(device))
    return {"peak_mem_gib_per_rank": [round(b / 2**30, 4) for b in peaks],
            "optimizer_state_bytes": int(max(d.per_rank(optimizer_state_bytes(optimizer))))}


def _preempted(stop: StopSignal, step: int, checkpoint: Path | None, run_dir: Path, d: distributed.Dist) -> Preempted:
    """The stop after `step`: said once (rank 0), with the flag that continues the run."""
    why = stop.received or "a stop signal on another rank"
    message = (f"ember train: stopped by {why} after step {step}; checkpoint {checkpoint}. To continue, run the same "
               f"command with --checkpoint.resume={run_dir}")
    if d.is_main:
        print(message, file=sys.stderr, flush=True)
    return Preempted(message, step)


def _grad_sync(wrapped, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch (DDP); FSDP2 modules take a
    flag instead."""
    if hasattr(wrapped, "no_sync"):
        return contextlib.nullcontext() if sync else wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def _check_same_run(cfg: Config, saved: dict) -> None:
    """A resumed run must train the same model on the same data."""
    old = config_from_dict(saved)
    for section in ("model", "data"):
        if getattr(old, section) != getattr(cfg, section):
            raise ConfigError(f"checkpoint.resume: the checkpoint's [{section}] differs from this run's: "
                              f"{getattr(old, section)} vs {getattr(cfg, section)}")
    if (old.job.seed, old.training.batch_size) != (cfg.job.seed, cfg.training.batch_size):
        raise ConfigError("checkpoint.resume: job.seed and training.batch_size must match the checkpoint's")


def _print_sparsity(report: dict, run_dir) -> None:
    """The per-layer densities of a pruned run, printed and saved as sparsity.json."""
    import json

    (run_dir / "sparsity.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"# sparsity {report['method']} target {report['target_sparsity']}: {report['params_kept']:,} of "
          f"{report['params_total']:,} prunable weights kept (density {report['density']:.3f})")
    for layer in report["layers"]:
        print(f"#   {layer['name']:<32} {str(layer['shape']):<14} density {layer['density']:.3f}")
