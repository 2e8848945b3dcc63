// cross_entropy family: the backward GEMMs of linear_cross_entropy with the softmax fused into
// their operand load. From a chunk of logits Z (rows × vocab) they compute
//   kDhidden  dh (rows × dim)   = G·W     (written)
//   kDweight  dW (vocab × dim) += Gᵀ·h    (accumulated)
// where G[r][v] = grad_logit(opt, Z[r][v], false, lse[r], vocab, scale[r]) (include/ember/
// cross_entropy.h): row r's ∂(scale·loss_r)/∂z without its target term, which the caller adds
// (one element per row). On CUDA, G never exists in memory: each logit tile goes global ->
// shared -> registers, becomes its gradient there, and feeds the tensor cores
// (csrc/side_tile_mainloop.cuh). Torch-free.
#pragma once

#include <cstdint>

#include "ember/common.h"
#include "ember/cross_entropy.h"

namespace ember::ce {

enum class SoftmaxGradKind : int { kDhidden = 0, kDweight = 1 };

struct SoftmaxGradGemmParams {
  SoftmaxGradKind kind = SoftmaxGradKind::kDhidden;
  int64_t rows = 0, vocab = 0, dim = 0;
  ScalarType type = ScalarType::kBFloat16;  // of operand, and of result for kDweight
  const float* logits = nullptr;  // rows × vocab fp32, row-major, contiguous
  const float* side = nullptr;    // rows × 4, contiguous: lse, scale, 0, 0
  const void* operand = nullptr;  // kDhidden: lm_weight (vocab × dim); kDweight: the chunk's hidden rows (rows × dim)
  void* result = nullptr;         // kDhidden: dh (rows × dim) fp32; kDweight: dW (vocab × dim), `type`; contiguous
  Options opt{};
  void* workspace = nullptr;      // device memory of softmax_grad_gemm_workspace_cuda(p) bytes
  int64_t workspace_bytes = 0;
};

// The CUDA kernels (bf16 operands; G rounded to bf16 in registers, as the materialized path rounds
// it): false, nothing launched, when they cannot run p (another dtype, not sm_90, vocab or dim
// not a multiple of 8, misaligned pointers, ...).
bool softmax_grad_gemm_cuda(const SoftmaxGradGemmParams& p, void* stream);
// Device memory the CUDA kernel needs for p (dh splits its long K by stream-K and reduces the
// partial tiles there; 0 for dW and for what the kernels would refuse).
int64_t softmax_grad_gemm_workspace_cuda(const SoftmaxGradGemmParams& p);
int64_t softmax_grad_gemm_workspace_cpu(const SoftmaxGradGemmParams& p);  // 0
// The same arithmetic on the CPU (fp32), G materialized a block of rows at a time: what the
// tests run to check the decomposition the CUDA path uses. false for other dtypes.
bool softmax_grad_gemm_cpu(const SoftmaxGradGemmParams& p, void* stream);

}  // namespace ember::ce
