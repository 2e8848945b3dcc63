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

import warnings

import torch

from .. import env
from .catalog import FAMILIES, KERNELS, injected, kernels_of
from .report import KernelResult, Report


def selftest(families=None, device=None, save: bool = True) -> Report:
    """Checks every kernel of `families` (default: all four) on `device` (default: the current GPU
    when ember's CUDA kernels are built and one is visible, else the CPU) and returns the report;
    the results are cached for the trainer (not while EMBER_SELFTEST_INJECT is set)."""
    from .. import cuda_available
    from . import cache, runner

    device = _device(device or ("cuda" if cuda_available() else "cpu"))
    kernels_of(families)  # an unknown family, or a misspelt injection, is refused before anything runs
    injected()
    report = runner.run(families, device)
    if save and not env.get("EMBER_SELFTEST_INJECT") and cache.save(report, device) is None:
        warnings.warn(
            f"ember.selftest: could not write its cache in {cache.cache_dir()} (EMBER_SELFTEST_CACHE names another "
            f"folder); `ember train` will check its kernels again",
            RuntimeWarning,
            stacklevel=2,
        )
    return report


def _device(device) -> torch.device:
    """A device the kernels exist on and this machine has (a meta or absent one would "pass" or crash)."""
    from .. import cuda_available

    asked = device
    try:
        device = torch.device(device)
    except RuntimeError:  # "cuda:abc", "gpu"
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"ember.selftest: device must be cpu or cuda (ember's kernels exist there), got {asked!r}")
    if device.type == "cuda" and not (cuda_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ValueError(
            f"ember.selftest: device {device}: ember's CUDA kernels are not built or no such GPU is visible "
            f"({torch.cuda.device_count()} GPU(s))"
        )
    return device


__all__ = ["FAMILIES", "KERNELS", "KernelResult", "Report", "kernels_of", "selftest"]
