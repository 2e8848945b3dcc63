"""The selftest's results on disk, one file per (ember build, device name, driver):
$XDG_CACHE_HOME/ember/selftest/<key>.json (~/.cache when unset; EMBER_SELFTEST_CACHE names another folder). A rebuilt library, changed
ops wrappers or checks, another card or another driver has another key, so its kernels are checked again."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import torch

from .. import atomic, env
from .report import Report
from .runner import device_name


def cache_dir() -> Path:
    folder = env.get("EMBER_SELFTEST_CACHE")
    return (
        Path(folder)
        if folder
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ember" / "selftest"
    )


@functools.cache
def _library_digest() -> str:
    """sha256 of the native library: any rebuild changes the key."""
    from .. import _C

    h = hashlib.sha256()
    with open(_C.__file__, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@functools.cache
def _source_digest() -> str:
    """sha256 of the Python the checked calls go through (ember.ops) and of the checks themselves:
    an editable install changes them without a rebuild."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted([*(root / "ops").glob("*.py"), *(root / "kernel_check").glob("*.py")]):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _driver(device: torch.device) -> str:
    if device.type != "cuda":
        return "-"
    import ctypes

    try:
        version = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
        return str(version.value)
    except OSError:
        return "unknown"


def key_of(device: torch.device) -> dict:
    from .. import _C

    info = _C.build_info()
    return {
        "ember": info["version"],
        "build_mode": info["build_mode"],
        "torch": torch.__version__,
        "library": _library_digest(),
        "sources": _source_digest(),
        "device": device_name(device),
        "driver": _driver(device),
    }


def path_of(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"{digest}.json"


def load(device: torch.device) -> Report | None:
    """The cached results for this device's key (None when never checked here)."""
    path = path_of(key_of(device))
    try:
        report = Report.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, truncated, or not a report
        return None
    report.cached = True
    return report


def save(report: Report, device: torch.device) -> Path | None:
    """Merges this report's results into the device's cache file (results of earlier runs for
    other kernels are kept), atomically; None when it could not be written (ranks of one machine
    writing the same file at once: the next run writes it)."""
    key = key_of(device)
    path = path_of(key)
    old = load(device)
    merged = {r.name: r for r in (old.results if old else [])}
    merged.update({r.name: r for r in report.results if r.status != "skip"})
    out = Report(report.device, report.device_name, sorted(merged.values(), key=lambda r: r.name), key=key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, out.to_dict())
    except OSError:
        return None
    return path


def covers(cached: Report | None, names: list[str]) -> bool:
    """Whether the cached report has a result for every one of these kernels."""
    have = {r.name for r in cached.results} if cached else set()
    return all(n in have for n in names)
