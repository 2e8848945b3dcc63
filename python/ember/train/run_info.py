"""What a run prints about itself when it starts (rank 0): its config, the model's size, device,
dtype and batch, the CPU's measured GEMM rate, and the float8 and sparsity layouts (the latter
also saved as sparsity.json)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import host
from .config import Config
from .distributed import Dist


def print_header(
    cfg: Config, d: Dist, model, dtype: torch.dtype, run_dir: Path, resume_from: Path | None, start: int
) -> None:
    print(f"ember train: run folder {run_dir}")
    print(cfg.to_toml().rstrip())
    print(
        f"# model {cfg.model.init_from or cfg.model.name}: {model.num_params() / 1e6:.2f}M parameters | device {d.device} x {d.world_size} "
        f"({cfg.training.parallel if d.enabled else 'single process'}) | {dtype} | "
        f"{cfg.training.batch_size * cfg.data.seq_len} tokens/step"
        + (f" | resuming {resume_from} at step {start}" if resume_from else "")
        + (" | no checkpoint to resume in it: starting at step 0" if cfg.checkpoint.resume and not resume_from else ""),
        flush=True,
    )
    if d.device.type == "cpu":
        print(
            f"# CPU: {torch.get_num_threads()} threads, fp32 GEMM {host.gemm_flops() / 1e9:.0f} GFLOP/s (measured; 'util' is the model's FLOP/s against it)",
            flush=True,
        )


def print_float8(cfg: Config, model) -> None:
    """How many of the blocks' Linear layers run in fp8, and how many could not."""
    from ..float8 import Float8Linear

    fp8 = [n for n, m in model.named_modules() if isinstance(m, Float8Linear)]
    dense = [n for n, m in model.layers.named_modules() if type(m) is torch.nn.Linear]
    print(
        f"# float8 {cfg.float8.recipe}: {len(fp8)} Linear layers run in fp8"
        + (f", {len(dense)} stay bf16/fp32 (dims not multiples of 16)" if dense else "")
    )


def print_sparsity(report: dict, run_dir: Path) -> None:
    """The per-layer densities of a pruned run, printed and saved as sparsity.json."""
    (run_dir / "sparsity.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"# sparsity {report['method']} target {report['target_sparsity']}: {report['params_kept']:,} of "
        f"{report['params_total']:,} prunable weights kept (density {report['density']:.3f})"
    )
    for layer in report["layers"]:
        print(f"#   {layer['name']:<32} {str(layer['shape']):<14} density {layer['density']:.3f}")
