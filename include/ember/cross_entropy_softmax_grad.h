// cross_entropy family: the backward GEMMs of linear_cross_entropy with the softmax fused into
// their operand load. From a chunk of fp32 logits Z (rows × vocab) they compute
//   kDhidden  dh (rows × dim)   = G·W     (written, fp32)
//   kDweight  dW (vocab × dim) += Gᵀ·h    (accumulated)
// where G[r][v] = grad_logit(opt, Z[r][v], v == y_r, lse[r], vocab, scale[r]) (include/ember/
// cross_entropy.h): row r's ∂(scale·loss_r)/∂z, computed in fp32 and rounded to bf16 once, as
// the materialized path rounds it. On CUDA, G never exists in memory: each logit tile goes
// global -> shared -> registers, becomes its gradient there, and feeds the tensor cores
// (csrc/side_tile_mainloop.cuh). Torch-free.
//
// The side tensor: 32-bit words, rows × (4·tiles), one group of 4 per row and vocabulary tile
// of `block` = side_block(kind) columns: (lse_r.hi as float bits, scale_r as float bits,
// y_r − t·block as int32, lse_r.lo as float bits) for tile t (lse_r = hi + lo: split_lse). The kernel learns which
// column is the target from the group of the tile it is in (its mainloop knows the tile's rows, not its position).
#pragma once

#include <cstdint>

#include "ember/common.h"
#include "ember/cross_entropy.h"

namespace ember::ce {

enum class SoftmaxGradKind : int { kDhidden = 0, kDweight = 1 };

// Vocabulary columns per side-tensor group: the kernels' K tile (dh) or M tile (dW).
constexpr int64_t side_block(SoftmaxGradKind kind) { return kind == SoftmaxGradKind::kDhidden ? 64 : 128; }

struct SoftmaxGradGemmParams {
  SoftmaxGradKind kind = SoftmaxGradKind::kDhidden;
  int64_t rows = 0, vocab = 0, dim = 0;
  ScalarType type = ScalarType::kBFloat16;  // of operand, and of result for kDweight
  const float* logits = nullptr;            // rows × vocab fp32, row-major, contiguous
  const void* side = nullptr;               // rows × side_words 32-bit words (see the top), contiguous
  int64_t side_words = 0;                   // 4·ceil(vocab / side_block(kind))
  const void* operand = nullptr;  // kDhidden: lm_weight (vocab × dim); kDweight: the chunk's hidden rows (rows × dim)
  void* result = nullptr;         // kDhidden: dh (rows × dim) fp32; kDweight: dW (vocab × dim), `type`; contiguous
  Options opt{};
};

// The CUDA kernels (bf16 operands): false, nothing launched, when they cannot run p (another
// dtype, not sm_90, vocab or dim not a multiple of 8, misaligned pointers, ...). workspace:
// device memory of softmax_grad_gemm_cuda_workspace_bytes(p) bytes.
bool softmax_grad_gemm_cuda(const SoftmaxGradGemmParams& p, void* workspace, void* stream);
// Device memory the CUDA kernel needs for p (dh splits its long K by stream-K and reduces the
// partial tiles there; 0 for dW and for what the kernels would refuse).
int64_t softmax_grad_gemm_cuda_workspace_bytes(const SoftmaxGradGemmParams& p);
int64_t softmax_grad_gemm_cpu_workspace_bytes(const SoftmaxGradGemmParams& p);  // 0
// The same arithmetic on the CPU (fp32), G materialized from the same side tensor: what the tests
// run to check what the CUDA path is given. false for other dtypes; workspace and stream unused.
bool softmax_grad_gemm_cpu(const SoftmaxGradGemmParams& p, void* workspace, void* stream);

}  // namespace ember::ce
