"""Every EMBER_* environment switch, declared once: name, type, default, purpose, and whether it
is a test hook (set by the tests to reach a path or a fault; never needed in normal use). Python
reads them through `get`; the native library reads its own (csrc/strict_mode.h and the drivers)
with getenv, under the names declared here. docs/building.md's table lists the build-time and
user-facing ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Switch:
    name: str
    type: type  # bool, int or str (a list is a comma-separated str)
    default: object
    purpose: str
    test_hook: bool = False
    read_by: str = "python"  # "python", "native" (the C++ library) or "build" (CMake, at build time)


SWITCHES = {
    s.name: s
    for s in (
        Switch("EMBER_CUDA", str, "", "1: build the CUDA kernels or fail; 0: CPU-only build", read_by="build"),
        Switch("EMBER_CUDA_ARCHS", str, "90a", "CUDA architectures of the build, CMake style", read_by="build"),
        Switch(
            "EMBER_CUTLASS_DIR", str, "", "CUTLASS include folder (default: the nvidia-cutlass wheel)", read_by="build"
        ),
        Switch("EMBER_PTXAS_VERBOSE", bool, False, "print ptxas' report for every kernel", read_by="build"),
        Switch(
            "EMBER_DISABLE_KERNELS",
            str,
            "",
            "kernels (names from `ember selftest`) the dispatchers must not pick: their calls take the reference "
            "or fallback path",
        ),
        Switch(
            "EMBER_SELFTEST_CACHE",
            str,
            "",
            "folder of the selftest's cached results (default: $XDG_CACHE_HOME/ember/selftest, ~/.cache when unset)",
        ),
        Switch(
            "EMBER_SELFTEST_INJECT",
            str,
            "",
            "kernels whose selftest fails as if the kernel had computed a wrong result",
            test_hook=True,
        ),
        Switch(
            "EMBER_CE_SOFTMAX_GEMM",
            str,
            "",
            "1 / 0: linear_cross_entropy's gradients through the softmax-gradient GEMMs or not (default: on CUDA bf16)",
            read_by="native",
        ),
        Switch("EMBER_FP8_GEMM_STRICT", bool, False, "a CUTLASS fp8 GEMM that refuses is an error", True, "native"),
        Switch("EMBER_SPARSE_STRICT", bool, False, "a sparse GEMM kernel that refuses is an error", True, "native"),
        Switch("EMBER_CE_STRICT", bool, False, "a softmax-gradient GEMM that refuses is an error", True, "native"),
        Switch(
            "EMBER_CE_CUDA_ORDER", bool, False, "the CPU rows kernel sums in the CUDA kernel's order", True, "native"
        ),
        Switch("EMBER_SPARSE_TILE_BYTES", int, 8 << 20, "bytes of one tile of the tiled bitmask path", True, "native"),
        Switch("EMBER_TEST_CRASH_AT", str, "", "kill the process at a named point (ember.train.faults)", True),
        Switch("EMBER_UPDATE_GOLDEN", bool, False, "rewrite the golden-loss file of tests/train", True),
        Switch("EMBER_CHECK_BUDGET_S", int, 560, "seconds bench/device_check.sh may take in all", read_by="build"),
    )
}


def get(name: str):
    """The switch's value from the environment, as its type, or its default when unset or empty."""
    s = SWITCHES[name]  # a KeyError here is a switch used without being declared
    raw = os.environ.get(name, "")
    if raw == "":
        return s.default
    if s.type is bool:
        return raw not in ("0", "false", "no", "off")
    if s.type is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    return raw


def names(name: str) -> list[str]:
    """A comma-separated switch as a list of its non-empty items."""
    return [item.strip() for item in str(get(name)).split(",") if item.strip()]
