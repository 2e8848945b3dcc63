"""The kernels' selftest: every kernel of the four families run on the device at shapes that reach
each of its instantiations and compared with the reference the tests use (ember.selftest,
`ember selftest`, and the trainer before it trains). Results are cached per (ember build, device
name, driver), see cache.py.

    catalog.py        the kernels: names, families, devices, what reaches them
    cases_<family>.py the shapes and references of each kernel
    runner.py         runs the cases of a device; report.py its result; cache.py on disk
    training.py       the trainer's check (refuse, or fall back)
"""

from __future__ import annotations

import torch

from .. import env
from .catalog import FAMILIES, KERNELS, kernels_of
from .report import KernelResult, Report


def selftest(families=None, device=None, save: bool = True) -> Report:
    """Checks every kernel of `families` (default: all four) on `device` (default: the current GPU
    when ember's CUDA kernels are built and one is visible, else the CPU) and returns the report;
    the results are cached for the trainer (not while EMBER_SELFTEST_INJECT is set)."""
    from .. import cuda_available
    from . import cache, runner

    device = torch.device(device or ("cuda" if cuda_available() else "cpu"))
    kernels_of(families)  # an unknown family is refused before anything runs
    report = runner.run(families, device)
    if save and not env.get("EMBER_SELFTEST_INJECT"):
        cache.save(report, device)
    return report


__all__ = ["FAMILIES", "KERNELS", "KernelResult", "Report", "kernels_of", "selftest"]
