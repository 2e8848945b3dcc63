"""Every kernel the selftest checks: its name (what EMBER_DISABLE_KERNELS and the reports use),
its family, the devices it exists on, and which calls reach it (csrc/*/*_driver.cpp and the
CUDA dispatchers decide; the cases in cases_<family>.py choose shapes accordingly)."""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("float8", "cross_entropy", "apollo", "sparse")
BOTH, CUDA = ("cpu", "cuda"), ("cuda",)


@dataclass(frozen=True)
class Kernel:
    name: str
    devices: tuple[str, ...]
    reached_by: str

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


KERNELS = {
    k.name: k
    for k in (
        Kernel("float8.quantize.tensor", BOTH, "quantize_fp8 granularity='tensor' (e4m3, e5m2; x and xᵀ)"),
        Kernel("float8.quantize.row", BOTH, "quantize_fp8 granularity='row'"),
        Kernel("float8.quantize.block", BOTH, "quantize_fp8 granularity='block' (1×128 and 1×32 runs)"),
        Kernel("float8.quantize.tile", BOTH, "quantize_fp8 granularity='tile' (128×128 and 32×32 tiles)"),
        Kernel(
            "float8.gemm.emulated",
            BOTH,
            "fp8_gemm on the CPU; on CUDA out_dtype other than bf16 or e4m3 × e5m2 (dequantize, fp32 GEMM)",
        ),
        Kernel("float8.gemm.cutlass_fast_small", CUDA, "tensorwise/rowwise e4m3, fast_accum, M ≤ 64 or one wave"),
        Kernel("float8.gemm.cutlass_fast_large", CUDA, "tensorwise/rowwise e4m3, fast_accum, more than one wave"),
        Kernel("float8.gemm.cutlass_e4m3_promoted", CUDA, "tensorwise/rowwise e4m3, fast_accum=False"),
        Kernel("float8.gemm.cutlass_e5m2_promoted", CUDA, "tensorwise/rowwise with a e5m2"),
        Kernel("float8.gemm.cutlass_blockwise", CUDA, "1×128 × 128×128 scales (forward, dgrad)"),
        Kernel("float8.gemm.cutlass_blockwise_wgrad", CUDA, "1×128 × 1×128 scales (weight gradient)"),
        Kernel(
            "cross_entropy.rows",
            BOTH,
            "cross_entropy forward/backward rows (fp32, bf16, fp16) and linear_cross_entropy's materialized gradient",
        ),
        Kernel(
            "cross_entropy.softmax_grad_gemm",
            BOTH,
            "linear_cross_entropy's fused gradient GEMMs (CUDA bf16 without bias; EMBER_CE_SOFTMAX_GEMM=1)",
        ),
        Kernel("apollo.projection", BOTH, "apollo_projection (fp32; bf16 on CUDA), the step's P"),
        Kernel(
            "apollo.step.fp32", BOTH, "apollo_step_ on float32 weights (channel and tensor scale, both orientations)"
        ),
        Kernel("apollo.step.bf16", BOTH, "apollo_step_ on bfloat16 weights"),
        Kernel("sparse.bitmask_tiled", BOTH, "masked_linear with a bitmask: W⊙M a tile at a time (all but CUDA bf16)"),
        Kernel("sparse.bitmask_gemm", CUDA, "masked_linear with a bitmask, bf16: the masking GEMMs"),
        Kernel("sparse.grouped", BOTH, "masked_linear with a block mask, bf16: one grouped GEMM per wave"),
        Kernel("sparse.block_gemms", BOTH, "masked_linear with a block mask, other dtypes: GEMM by GEMM per tile run"),
    )
}


def kernels_of(families=None, device: str | None = None) -> list[Kernel]:
    """The kernels of these families (all when None; one name alone is that family), on this device
    type (all when None)."""
    families = FAMILIES if families is None else (families,) if isinstance(families, str) else tuple(families)
    if not families:
        raise ValueError(f"ember.selftest: families is empty (name some of {', '.join(FAMILIES)}, or None for all)")
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"ember selftest: unknown family {', '.join(unknown)} (families: {', '.join(FAMILIES)})")
    return [k for k in KERNELS.values() if k.family in families and (device is None or device in k.devices)]


def injected() -> set[str]:
    """The kernels EMBER_SELFTEST_INJECT makes fail (a misspelt name is refused: it would check nothing)."""
    from .. import env

    names = set(env.names("EMBER_SELFTEST_INJECT"))
    unknown = sorted(names - set(KERNELS))
    if unknown:
        raise ValueError(
            f"EMBER_SELFTEST_INJECT: unknown kernel name(s) {', '.join(unknown)}; `ember selftest` lists the names"
        )
    return names
