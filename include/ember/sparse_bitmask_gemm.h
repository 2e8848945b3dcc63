// sparse family: the GEMMs of a bitmask masked_linear that never build W⊙M. The forward and dX
// apply the mask to W tiles as they are loaded; dW is masked as it is stored. Torch-free.
//
//   kind      computes                                   reads
//   kForward  y  (tokens × out) = x · (W⊙M)ᵀ [+ bias]     x, weight, bias (may be null), words
//   kDgrad    dx (tokens × in)  = dy · (W⊙M)              grad, weight, words
//   kWgrad    dw (out × in)     = (dyᵀ · x) ⊙ M           grad, x, words
// All matrices are row-major and contiguous: x (tokens × in), grad (tokens × out), weight (out ×
// in), result as above; words is the bitmask of weight's shape (include/ember/sparse.h). One dtype
// for x, grad, weight, bias and result; fp32 accumulation.
#pragma once

#include <cstdint>

namespace ember::sparse {

enum class BitmaskGemmKind : int { kForward = 0, kDgrad = 1, kWgrad = 2 };

struct BitmaskGemmParams {
  BitmaskGemmKind kind = BitmaskGemmKind::kForward;
  int64_t tokens = 0, out = 0, in = 0;
  const void* x = nullptr;
  const void* grad = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* result = nullptr;
  const int32_t* words = nullptr;
};

// Runs one GEMM on the current device and stream with the CUTLASS sm90a kernels (bf16 only).
// Returns false, launching nothing, when they cannot run it (not sm_90, another dtype, in not a
// multiple of 128 or out of 8, misaligned pointers, ...): the caller then uses the tiled path.
bool bitmask_gemm_cuda(const BitmaskGemmParams& p, bool bf16, void* stream);

}  // namespace ember::sparse
