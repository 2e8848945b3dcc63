// Bitmask GEMM kernel: dx = dy·(W⊙M), Wᵀ as the masked register operand (bitmask_gemm_kernels.cuh).
#include "bitmask_gemm_kernels.cuh"

namespace ember::sparse::bitmask_impl {

bool bitmask_dgrad(const BitmaskGemmParams& p, const CutlassLaunch& launch) {
  return run_config<MaskedGemm<true>>(p, launch);
}

}  // namespace ember::sparse::bitmask_impl
