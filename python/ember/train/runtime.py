"""How a run uses its device: the compute dtype, autocast, and deterministic algorithms. Shared by
the trainer and the evaluator (which must agree on them)."""

from __future__ import annotations

import contextlib
import os

import torch

from .config import Config


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
