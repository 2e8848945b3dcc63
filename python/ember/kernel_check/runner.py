"""Runs the cases of the kernels asked for on one device and collects the report."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from .. import kernels
from . import cases_apollo, cases_cross_entropy, cases_float8, cases_sparse
from .catalog import injected, kernels_of
from .compare import Compare
from .report import KernelResult, Report

CASES = {**cases_float8.CASES, **cases_cross_entropy.CASES, **cases_apollo.CASES, **cases_sparse.CASES}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return (
        f"{platform.machine()} {platform.processor() or ''}".strip() + f" ({torch.backends.cpu.get_cpu_capability()})"
    )


def run(families=None, device="cpu") -> Report:
    """Every kernel of `families` checked on `device` (the ones that exist elsewhere only are listed as skipped).
    The registry of disabled kernels is set aside meanwhile: the kernels themselves are checked."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    report = Report(str(device), device_name(device))
    inject = injected()
    with kernels.registry().suspended(), as_the_trainer_calls():
        for kernel in kernels_of(families):
            if device.type not in kernel.devices:
                report.results.append(KernelResult(kernel.name, "skip", detail=f"{'/'.join(kernel.devices)} only"))
                continue
            report.results.append(check(kernel.name, device, kernel.name in inject))
    return report


@contextlib.contextmanager
def as_the_trainer_calls():
    """The caller's modes set aside for the check (inference_mode, autocast, a float64 default
    dtype made kernels fail that are right, and the failures were cached), the RNG left as found."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
                yield
    finally:
        torch.set_default_dtype(dtype)


def check(name: str, device: torch.device, inject: bool) -> KernelResult:
    """One kernel's cases: pass when every comparison is within its tolerance."""
    start = time.perf_counter()
    try:
        compares: list[Compare] = CASES[name](device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # a kernel that raises or refuses fails its check, naming why
        return KernelResult(
            name, "fail", math.nan, math.nan, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
        )
    if not compares:  # a case that compared nothing checked nothing: no pass to trust
        return KernelResult(name, "fail", math.nan, math.nan, time.perf_counter() - start, "no comparison ran")
    if inject:
        compares = [c.corrupted() for c in compares]
    rows = []
    for c in compares:
        err, tol = c.error()
        ratio = err / tol if tol > 0 else (0.0 if err == 0 else math.inf)
        rows.append((math.inf if math.isnan(ratio) else ratio, err, tol, c.what))
    worst_ratio, err, tol, what = max(rows, key=lambda r: r[:2])
    status = "pass" if worst_ratio <= 1 else "fail"
    detail = f"{len(compares)} comparisons" + (f"; worst: {what}" if status == "fail" else "")
    return KernelResult(name, status, err, tol, time.perf_counter() - start, detail)
