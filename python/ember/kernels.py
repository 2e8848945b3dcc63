"""The kernels the dispatchers must not pick. One registry for every family: filled from
EMBER_DISABLE_KERNELS when first asked, and by the trainer when a kernel fails its selftest and
--training.kernel_fallback=true. A disabled kernel's calls take the reference path: in the
Python wrappers (ember.ops.*) for the kernels they call directly, in the native dispatchers (where
the *_STRICT fallbacks are, csrc/kernel_registry.h) for the choices made there.

Kernel names are the selftest's (`ember selftest` lists them): family.kernel[.variant].
"""

from __future__ import annotations

import contextlib

from . import env

# The kernels a native dispatcher picks (and falls back from) itself: the registry tells it.
NATIVE = frozenset(
    {
        "float8.gemm.cutlass_fast_small",
        "float8.gemm.cutlass_fast_large",
        "float8.gemm.cutlass_e4m3_promoted",
        "float8.gemm.cutlass_e5m2_promoted",
        "float8.gemm.cutlass_blockwise",
        "float8.gemm.cutlass_blockwise_wgrad",
        "cross_entropy.softmax_grad_gemm",
        "sparse.bitmask_gemm",
        "sparse.grouped",
    }
)


class DisabledKernels:
    """The set of disabled kernel names, mirrored into the native library."""

    def __init__(self, names=()):
        self._names: set[str] = set()
        self.add(names)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def names(self) -> list[str]:
        return sorted(self._names)

    def add(self, names) -> None:
        """Disable these kernels (unknown names are refused, so a typo cannot leave a kernel on)."""
        from .kernel_check.catalog import FAMILIES, KERNELS, kernels_of

        names = set(names)
        unknown = sorted(names - set(KERNELS))
        if unknown:
            family = next((n for n in unknown if n in FAMILIES), None)
            members = ", ".join(k.name for k in kernels_of([family])) if family else ""
            hint = f"; {family} is a family: its kernels are {members}" if family else ""
            raise ValueError(
                f"ember.kernels: unknown kernel name(s) {', '.join(unknown)} (EMBER_DISABLE_KERNELS or a selftest "
                f"result); `ember selftest` lists the names{hint}"
            )
        self._names |= names
        self._sync()

    def set(self, names) -> None:
        """Exactly these disabled (tests; the trainer adds)."""
        self._names = set()
        self.add(names)

    @contextlib.contextmanager
    def suspended(self):
        """None disabled within the block (the selftest checks the kernels themselves), then as before."""
        saved = set(self._names)
        self.set(())
        try:
            yield
        finally:
            self.set(saved)

    def _sync(self) -> None:
        from . import _C

        native = sorted(self._names & NATIVE)
        if hasattr(_C, "set_disabled_kernels"):
            _C.set_disabled_kernels(native)
        elif native:
            raise RuntimeError(
                f"ember.kernels: this build of ember cannot disable {', '.join(native)} (its native library has no "
                f"kernel registry); rebuild it from the source folder"
            )


# The process's registry (its one owner of the set), filled from EMBER_DISABLE_KERNELS at import.
# A plain object rather than a cached function: torch.compile guards on what it holds.
_REGISTRY = DisabledKernels(env.names("EMBER_DISABLE_KERNELS"))


def registry() -> DisabledKernels:
    return _REGISTRY


def disabled(name: str) -> bool:
    """Whether the dispatchers must avoid kernel `name`."""
    return name in _REGISTRY
