// Scaled fp8 GEMM kernel (tensorwise / rowwise), e4m3 × e4m3 -> bf16, FP8 fast accumulation,
// for large M: 128×128×128 tiles, cluster 1×2×1 (the pair shares the A tile by TMA multicast;
// pairs along N, which is large, rather than along the possibly ragged M), persistent
// warp-specialized pingpong (two consumer warp groups on alternate tiles, one's epilogue under
// the other's mainloop), the configuration PyTorch's rowwise scaled_mm runs for large shapes.
#include "gemm_kernels.cuh"

namespace ember::float8::gemm_impl {

EMBER_FP8_GEMM_KERNEL(
    gemm_scaled_e4m3_fast_large,
    ScaledGemm<cutlass::float_e4m3_t, cute::Shape<_128, _128, _128>, cute::Shape<_1, _2, _1>,
               cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum, cutlass::epilogue::TmaWarpSpecialized>)

}  // namespace ember::float8::gemm_impl
