"""What a run reports: a live progress line, JSONL records, TensorBoard (when installed), the same
rows to Weights & Biases (--metrics.wandb: metrics_wandb.py), and
MFU from the card's peak dense bf16 FLOP/s (looked up from its name through nvidia-ml-py, or
torch when NVML is missing)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import atomic

# Dense bf16 tensor-core peak (datasheets), by a substring of the card's name; first match wins.
PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def card_name(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(device.index or 0))
        return name.decode() if isinstance(name, bytes) else name
    except Exception:  # no nvidia-ml-py, or NVML unavailable in a container
        return torch.cuda.get_device_name(device)


def peak_flops(name: str | None) -> float | None:
    if not name:
        return None
    return next((v for k, v in PEAK_BF16_FLOPS if k in name), None)


class MetricsLogger:
    """Rank 0 writes; the others only keep time."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        progress: bool,
        tensorboard: bool,
        log_every: int,
        wandb: dict | None = None,
    ):
        """wandb: the W&B run's settings (metrics_wandb.WandbRun: project, config, resume), or None."""
        self.enabled, self.log_every = enabled, log_every
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.jsonl = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        self.jsonl = open(run_dir / "metrics.jsonl", "a")
        if wandb is not None:
            from .metrics_wandb import WandbRun

            self.wandb = WandbRun(run_dir, **wandb)
            if not self.wandb.continued:  # a rewind, W&B turned on at a resume: the steps kept before it too
                for _, row in _rows(Path(run_dir) / "metrics.jsonl"):
                    self.wandb.log(row)
        if tensorboard:
            self.tb = _tensorboard(run_dir)
        else:  # an earlier history's (a rewind, a reused name) or this one's cut short: rebuilt when turned on again
            shutil.rmtree(Path(run_dir) / "tensorboard", ignore_errors=True)
        if progress and self.tty:
            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr)
        self.plain = progress and not self.tty

    def record(self, row: dict) -> None:
        """One JSONL line (and TensorBoard scalars) for a step's metrics or an evaluation."""
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3), **row}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            _add_scalars(self.tb, row)
        if self.wandb is not None:
            self.wandb.log(row)

    def progress(self, step: int, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
        elif self.plain:
            print(f"step {step:>6}  {text}", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


def _tensorboard(run_dir: Path):
    """A TensorBoard writer whose folder is rebuilt from metrics.jsonl (none when tensorboard is
    not installed): after a resume, a rewind or a reused run name it shows the one history that
    metrics.jsonl holds, never the steps a resumed run trains again."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSONL only
        return None
    folder = Path(run_dir) / "tensorboard"
    shutil.rmtree(folder, ignore_errors=True)
    tb = SummaryWriter(str(folder))
    for _, row in _rows(Path(run_dir) / "metrics.jsonl"):
        _add_scalars(tb, row)
    return tb


def _add_scalars(tb, row: dict) -> None:
    for k, v in row.items():
        if k not in ("step", "time") and isinstance(v, (int, float)) and v is not None:
            tb.add_scalar(k, v, row["step"], walltime=row.get("time"))


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(line, record) for each whole record of a metrics.jsonl (none when it does not exist); a
    last line that a crash cut short is left out."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError:
            continue
    return out


def optimizer_state_bytes(optimizer) -> int:
    """The optimizer state this rank holds: its local shards under FSDP2 (DTensor)."""
    total = 0
    for state in optimizer.state.values():
        for t in state.values():
            if isinstance(t, torch.Tensor):
                local = t.to_local() if hasattr(t, "to_local") else t
                total += local.numel() * local.element_size()
    return total


def peak_memory_bytes(device: torch.device) -> int:
    """The peak memory of this rank so far: allocated on a GPU, the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def trim_metrics(run_dir: Path, step: int, dropped_to: Path | None = None) -> None:
    """Resuming at `step`: drop the rows of later steps, which are trained again (into
    dropped_to/metrics.jsonl when given: a rewound history's), and a last line that a crash cut
    short (appending after it would spoil the next row too)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    rows = _rows(path)
    if dropped_to is not None:
        atomic.write_text(
            Path(dropped_to) / "metrics.jsonl", "".join(f"{x}\n" for x, r in rows if r.get("step", 0) > step)
        )
    atomic.write_text(path, "".join(f"{x}\n" for x, r in rows if r.get("step", 0) <= step))


def format_line(m: dict) -> str:
    parts = [
        f"loss {m['loss']:.4f}",
        f"gnorm {m['grad_norm']:.3f}",
        f"lr {m['lr']:.2e}",
        f"{m['tokens_per_s'] / 1e3:.1f}k tok/s",
    ]
    if m.get("mfu") is not None:
        parts.append(f"mfu {100 * m['mfu']:.1f}%")
    if m.get("cpu_util") is not None:  # achieved FLOP/s over the CPU's measured fp32 GEMM rate
        parts.append(f"util {100 * m['cpu_util']:.0f}%")
    if m.get("mem_gib") is not None:
        parts.append(f"mem {m['mem_gib']:.2f} GiB")
    return " | ".join(parts)
