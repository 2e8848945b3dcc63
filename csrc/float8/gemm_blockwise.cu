// Blockwise-scaled fp8 GEMM kernel (recipe kBlockwise: forward and dgrad), e4m3 × e4m3 -> bf16
// (+ bias): a scaled per 1×128 group (scales (M, ⌈K/128⌉) row-major), b per 128×128 tile (scales
// (⌈N/128⌉, ⌈K/128⌉) row-major), applied in the mainloop every 128 of K. 128×128×128 tiles,
// cluster 1×2×1, persistent cooperative (CUTLASS example 67's schedule). See BlockwiseGemm in
// gemm_kernels.cuh for how the scale layouts map.
#include "gemm_kernels.cuh"

namespace ember::float8::gemm_impl {

EMBER_FP8_GEMM_KERNEL(gemm_blockwise, BlockwiseGemm<128>)

}  // namespace ember::float8::gemm_impl
