// Bitmask GEMM kernel: dw = (dyᵀ·x)⊙M, the mask applied in the epilogue (bitmask_gemm_kernels.cuh).
#include "bitmask_gemm_kernels.cuh"

namespace ember::sparse::bitmask_impl {

bool bitmask_wgrad(const BitmaskGemmParams& p, const CutlassLaunch& launch) {
  return run_config<MaskedWgradGemm<>>(p, launch);
}

}  // namespace ember::sparse::bitmask_impl
