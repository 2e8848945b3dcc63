// Scaled fp8 GEMM kernel (tensorwise / rowwise), e5m2 × e4m3 -> bf16 (the tensorwise recipe's
// backward: dY in e5m2), promoted accumulation (every 128 of K into fp32, as in
// gemm_scaled_e4m3_promoted.cu; e5m2 gradients span a wide range, so this kernel is used
// whatever fast_accum says). 128×128×128 tiles, cluster 1×2×1, persistent cooperative.
#include "gemm_kernels.cuh"

namespace ember::float8::gemm_impl {

EMBER_FP8_GEMM_KERNEL(
    gemm_scaled_e5m2_promoted,
    ScaledGemm<cutlass::float_e5m2_t, cute::Shape<_128, _128, _128>, cute::Shape<_1, _2, _1>,
               cutlass::gemm::KernelTmaWarpSpecializedCooperative, cutlass::epilogue::TmaWarpSpecializedCooperative>)

}  // namespace ember::float8::gemm_impl
