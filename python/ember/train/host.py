"""Training on a CPU: keep freed memory in the process, and measure the machine's own GEMM rate
(the peak that CPU utilization, the analogue of a GPU's MFU, is reported against)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

import torch


def keep_freed_memory() -> bool:
    """glibc hands freed blocks of a few MB back to the kernel and page-faults them in again on
    the next step (each activation tensor of a small model is one such block: ~12% of the debug
    model's CPU step). Raising the mmap and trim thresholds keeps them in the heap. Returns
    whether it applied (glibc only)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 31))
    except (OSError, AttributeError):  # not glibc
        return False


@functools.lru_cache(maxsize=None)
def gemm_flops(n: int = 1024, repeats: int = 5) -> float:
    """The fp32 FLOP/s of an n×n×n matmul with torch's threads: the best of a few (~0.2 s)."""
    g = torch.Generator().manual_seed(0)  # its own: the run's random streams stay as they are
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best
