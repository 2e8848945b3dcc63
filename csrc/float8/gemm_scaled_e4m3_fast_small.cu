// Scaled fp8 GEMM kernel (tensorwise / rowwise), e4m3 × e4m3 -> bf16, FP8 fast accumulation,
// for small M (decode-like shapes, or any shape whose 64-row tiling fits in one wave; see
// gemm_cuda.cu): 64×128×128 tiles, so an M ≤ 64 problem wastes no MMA rows on padding, and twice
// as many CTAs as 128-row tiles when M is a little above 64. Cluster 1×1 (multicasting the one
// small A tile saves little). Persistent pingpong: with more tiles than SMs one consumer warp
// group's epilogue overlaps the other's mainloop.
#include "gemm_kernels.cuh"

namespace ember::float8::gemm_impl {

EMBER_FP8_GEMM_KERNEL(
    gemm_scaled_e4m3_fast_small,
    ScaledGemm<cutlass::float_e4m3_t, cute::Shape<_64, _128, _128>, cute::Shape<_1, _1, _1>,
               cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum, cutlass::epilogue::TmaWarpSpecialized>)

}  // namespace ember::float8::gemm_impl
