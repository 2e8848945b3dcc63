// Blockwise-scaled fp8 GEMM kernel (recipe kBlockwise: forward and dgrad), e4m3 × e4m3 -> bf16
// (+ bias): a scaled per 1×128 group (scales (M, ⌈K/128⌉) row-major), b per 128×128 tile (scales
// (⌈N/128⌉, ⌈K/128⌉) row-major), applied in the mainloop every 128 of K. 128×128×128 tiles,
// cluster 1×2×1, persistent cooperative (CUTLASS example 67's schedule). See BlockwiseGemm in
// gemm_kernels.cuh for how the scale layouts map.
#include "gemm_kernels.cuh"

namespace ember::float8::gemm_impl {
namespace {
using Config = BlockwiseGemm<128>;
}  // namespace

size_t gemm_blockwise_workspace(const GemmParams& p, int sm_count) { return workspace_bytes<Config>(p, sm_count); }
bool gemm_blockwise(const GemmParams& p, const GemmLaunch& launch) { return run<Config>(p, launch); }

}  // namespace ember::float8::gemm_impl
