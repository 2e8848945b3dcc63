"""Small, fast training jobs for the tests: a 2-layer model on short sequences."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ember.train import parse_config, train

# on the CPU, a metrics line every step and no other output (progress bar, TensorBoard, plot, export)
QUIET_CPU = [
    "--metrics.log_every=1",
    "--metrics.progress=false",
    "--metrics.tensorboard=false",
    "--metrics.plot=false",
    "--checkpoint.export_safetensors=false",
    "--job.device=cpu",
]
TINY = [
    "--model.dim=64",
    "--model.n_layers=2",
    "--model.n_heads=4",
    "--model.n_kv_heads=2",
    "--model.ffn_hidden=128",
    "--data.seq_len=64",
    "--training.batch_size=8",
    "--training.steps=6",
    "--lr_scheduler.warmup_steps=2",
    "--eval.every=0",
    "--eval.batches=1",
    "--eval.batch_size=8",
    "--checkpoint.every=0",
    *QUIET_CPU,
]


# The smallest model and run the journeys of the data pipelines train (CPU, no plots, no kernel check).
SMALL = [
    "--model.name=debug",
    "--model.dim=32",
    "--model.n_layers=1",
    "--model.n_heads=2",
    "--data.seq_len=32",
    "--training.batch_size=4",
    "--metrics.progress=false",
    "--metrics.plot=false",
    "--metrics.tensorboard=false",
    "--training.selftest=false",
    "--job.device=cpu",
]


def flags(tmp: Path, name: str, *extra: str) -> list[str]:
    return [*TINY, f"--job.dir={tmp}", f"--job.name={name}", *extra]


def run(tmp: Path, name: str, *extra: str) -> dict:
    """Train in this process; returns the summary plus the per-step losses."""
    summary = train(parse_config(flags(tmp, name, *extra)))
    summary["losses"] = losses(tmp / name)
    return summary


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def torchrun(*args: str, nproc: int) -> list[str]:
    """`torchrun --standalone --nproc-per-node N ARGS`, run by this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def command(*args: str, nproc: int = 0) -> list[str]:
    """`ember ARGS`, or `torchrun --nproc-per-node N -m ember ARGS`."""
    return torchrun("-m", "ember", *args, nproc=nproc) if nproc else [sys.executable, "-m", "ember", *args]


def run_job(script: Path, *args: str, nproc: int, timeout: int = 1200) -> None:
    """A test's own torchrun job (one process group for many runs): `torchrun ... SCRIPT ARGS`,
    which must succeed."""
    r = subprocess.run(
        torchrun(str(script), *args, nproc=nproc), capture_output=True, text=True, timeout=timeout, env=cli_env()
    )
    assert r.returncode == 0, r.stderr[-4000:]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def cli(*args: str, nproc: int = 0, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ember ARGS` (or `torchrun --nproc-per-node N -m ember ARGS`) in a fresh process; `env`
    adds environment variables."""
    return subprocess.run(
        command(*args, nproc=nproc), capture_output=True, text=True, timeout=timeout, env=cli_env(**(env or {}))
    )
