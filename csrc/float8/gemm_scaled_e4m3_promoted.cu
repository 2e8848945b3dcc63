// Scaled fp8 GEMM kernel (tensorwise / rowwise), e4m3 × e4m3 -> bf16, promoted accumulation
// (fast_accum = false: CUTLASS's fp8 mainloop adds the tensor cores' partial sums into separate
// fp32 accumulators every 4 MMAs, i.e. every 128 of K). 128×128×128 tiles, cluster 1×2×1,
// persistent cooperative (both consumer warp groups on one tile, 64 rows each): the promotion
// doubles the accumulator registers, which a pingpong 128×128 tile would spill.
#include "gemm_kernels.cuh"

namespace ember::float8::gemm_impl {

EMBER_FP8_GEMM_KERNEL(
    gemm_scaled_e4m3_promoted,
    ScaledGemm<cutlass::float_e4m3_t, cute::Shape<_128, _128, _128>, cute::Shape<_1, _2, _1>,
               cutlass::gemm::KernelTmaWarpSpecializedCooperative, cutlass::epilogue::TmaWarpSpecializedCooperative>)

}  // namespace ember::float8::gemm_impl
