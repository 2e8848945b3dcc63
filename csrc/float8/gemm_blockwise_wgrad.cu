// Blockwise-scaled fp8 GEMM kernel (recipe kBlockwiseWgrad: the weight gradient, K = tokens),
// e4m3 × e4m3 -> bf16 (+ bias): a and b both scaled per 1×128 group along K (scales
// (M, ⌈K/128⌉) and (N, ⌈K/128⌉) row-major): CUTLASS's blockwise mainloop with
// ScaleGranularityM = ScaleGranularityN = 1, which scales each accumulator element by
// sfa[m] · sfb[n] of the K block. 128×128×128 tiles, cluster 1×2×1, persistent cooperative.
#include "gemm_kernels.cuh"

namespace ember::float8::gemm_impl {

EMBER_FP8_GEMM_KERNEL(gemm_blockwise_wgrad, BlockwiseGemm<1>)

}  // namespace ember::float8::gemm_impl
