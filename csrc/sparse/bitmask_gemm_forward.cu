// Bitmask GEMM kernel: y = x·(W⊙M)ᵀ + bias, W masked in registers as its tiles are loaded
// (bitmask_gemm_kernels.cuh).
#include "bitmask_gemm_kernels.cuh"

namespace ember::sparse::bitmask_impl {

bool bitmask_forward(const BitmaskGemmParams& p, const CutlassLaunch& launch) {
  return run_config<MaskedGemm<false>>(p, launch);
}

}  // namespace ember::sparse::bitmask_impl
