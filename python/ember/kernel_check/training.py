"""The trainer's kernel check: before a run makes anything, the kernels of the families it uses are
checked on this rank's device (from the cache when this build, card and driver passed before).
A failure stops the run naming the kernel, or, with fallback, routes that kernel's calls to the
reference path for this run (ember.kernels), says so loudly, and records it in the run folder."""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import atomic, env, kernels
from . import cache, runner
from .catalog import KERNELS, kernels_of
from .report import Report

FALLBACK_FILE = "kernel_fallback.json"


class KernelCheckFailed(RuntimeError):
    """A kernel the run needs failed its selftest on this device (and no fallback was asked for)."""


@dataclass
class KernelCheck:
    report: Report  # the results of the run's kernels on this device
    fallback: list[str]  # kernels routed to the reference path for this run

    def record(self, run_dir: Path) -> None:
        """The fallback, in the run folder (nothing when every kernel passed)."""
        if self.fallback:
            atomic.write_json(Path(run_dir) / FALLBACK_FILE, {"disabled": self.fallback, **self.report.to_dict()})


def check_kernels(families: list[str], device: torch.device, fallback: bool, verbose: bool) -> KernelCheck:
    """The report of `families`' kernels on `device`; raises KernelCheckFailed naming a failed
    kernel unless `fallback`."""
    names = [k.name for k in kernels_of(families, device.type)]
    injected = bool(env.get("EMBER_SELFTEST_INJECT"))  # a test hook's result is never cached
    cached = None if injected else cache.load(device)
    if cache.covers(cached, names):
        report = Report(cached.device, cached.device_name, [cached.result(n) for n in names], cached=True)
    else:
        start = time.perf_counter()
        report = runner.run(families, device)
        report.results = [r for r in report.results if r.name in names]
        if not injected:
            cache.save(report, device)
        if verbose:
            print(
                f"ember train: {len(names)} kernels checked on {device} in {time.perf_counter() - start:.1f}s (ember selftest)"
            )
    # a kernel the user disabled (EMBER_DISABLE_KERNELS) is not called: its failure stops nothing (one
    # disabled by an earlier run's fallback in this process still refuses or falls back, and is recorded)
    off = set(env.names("EMBER_DISABLE_KERNELS"))
    failed = [n for n in report.failed() if not (n in off and kernels.disabled(n))]
    if failed and not fallback:
        raise KernelCheckFailed(_refusal(report, failed))
    if failed:
        kernels.registry().add(failed)
        message = (
            f"kernel(s) {', '.join(failed)} failed the selftest on {device} ({report.device_name}); "
            f"--training.kernel_fallback=true: their calls take the reference path for this run (slower)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        print(f"ember train: WARNING: {message}", file=sys.stderr, flush=True)
    return KernelCheck(report, failed)


def check_on_every_rank(families: list[str], d, fallback: bool) -> KernelCheck:
    """check_kernels on each rank's own device (d: the run's ember.train.distributed.Dist), and
    every rank refuses when one does, so none waits for the others in a collective."""
    try:
        result, error = check_kernels(families, d.device, fallback, d.is_main), None
    except Exception as exc:  # any error, not only a failed kernel: raised after the others know of it
        result, error = None, exc
    failed = [rank for rank, bad in enumerate(d.per_rank(float(error is not None))) if bad]
    if error is not None:
        raise error
    if failed:
        raise KernelCheckFailed(
            f"rank {failed[0]}'s kernel check failed on its device (its error names the kernel or the fault)"
        )
    return _same_fallback_everywhere(result, families, d) if fallback else result


def _same_fallback_everywhere(result: KernelCheck, families: list[str], d) -> KernelCheck:
    """A kernel that failed on any rank takes the reference path on every rank: the ranks compute
    alike, and rank 0, which writes the run folder, records it."""
    names = [k.name for k in kernels_of(families, d.device.type)]
    failed_somewhere = d.all_sum([float(n in result.fallback) for n in names]).tolist()
    union = [n for n, count in zip(names, failed_somewhere) if count > 0]
    others = [n for n in union if n not in result.fallback]
    if others:
        kernels.registry().add(others)
        message = f"kernel(s) {', '.join(others)} failed the selftest on another rank: the reference path here too"
        print(f"ember train: WARNING: {message}", file=sys.stderr, flush=True)
    return KernelCheck(result.report, union)


def keep_earlier_fallback(run_dir: Path) -> list[str]:
    """A run resumed with --training.selftest=false keeps on the reference path the kernels its
    earlier part fell back from: the check that found them failing is the one skipped."""
    try:
        names = [n for n in json.loads((Path(run_dir) / FALLBACK_FILE).read_text())["disabled"] if n in KERNELS]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if names:
        kernels.registry().add(names)
        print(
            f"ember train: kernel(s) {', '.join(names)} keep the reference path ({FALLBACK_FILE} of this run; "
            f"--training.selftest=false skipped the check that would decide again)",
            file=sys.stderr,
            flush=True,
        )
    return names


def _refusal(report: Report, failed: list[str]) -> str:
    r = report.result(failed[0])
    why = r.detail if r.error != r.error else f"error {r.error:.3g} > tolerance {r.tolerance:.3g} ({r.detail})"
    others = f" (also failed: {', '.join(failed[1:])})" if failed[1:] else ""
    return (
        f"kernel {r.name} failed its selftest on {report.device} ({report.device_name}): {why}{others}. "
        f"Nothing was written. `ember selftest --device {report.device.split(':')[0]}` shows every kernel; "
        f"--training.kernel_fallback=true trains with the failed kernels' reference path instead"
    )


def describe(report: Report | None) -> str:
    """One line for `ember info`."""
    if report is None:
        return "not checked yet (`ember selftest`; `ember train` checks its kernels first)"
    counts = {s: sum(r.status == s for r in report.results) for s in ("pass", "fail")}
    failed = report.failed()
    return f"{counts['pass']} passed, {counts['fail']} failed" + (f": {', '.join(failed)}" if failed else "")
