// The cross-entropy ops over whole tensors: row kernels for logits, and the chunked linear +
// cross-entropy (GEMMs through ATen: cuBLAS on CUDA, the CPU BLAS on CPU). Device-generic: the
// caller passes the device's kernel table (bindings/cross_entropy_cpu.cpp, cross_entropy_cuda.cpp).
// Uses ATen, so it is not part of include/ember/.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "ember/cross_entropy.h"
#include "ember/cross_entropy_softmax_grad.h"

namespace ember::ce {

// The device's kernels: the row kernels, and the softmax-gradient GEMMs
// (include/ember/cross_entropy_softmax_grad.h) that the chunked linear cross-entropy's backward uses where they run
// (CUDA: bf16 by default; EMBER_CE_SOFTMAX_GEMM=1 / 0 forces them on / off, the CPU's version included).
struct Kernels {
  void (*forward)(const RowsParams&, void*);
  void (*backward)(const RowsParams&, void*);
  bool (*softmax_grad_gemm)(const SoftmaxGradGemmParams&, void*, void*);  // (params, workspace, stream)
  int64_t (*softmax_grad_gemm_workspace_bytes)(const SoftmaxGradGemmParams&);
  void* stream = nullptr;
};

// logits (N, V) row-major rows (any row stride), target (N) int64, weight (N) fp32 or none.
// Returns (loss, lse, logprobs, entropy): fp32 (N), lse float64 (max + log Σ without rounding);
// logprobs / entropy empty unless asked for.
// With grad defined, also writes ∂(Σ_i grad_loss[i]·loss_i)/∂logits into it (may be logits) in
// the same visit of each row; grad_loss: (N) or one value for every row.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& logits, const at::Tensor& target,
                                                                   const std::optional<at::Tensor>& weight,
                                                                   const Options& o, bool logprobs, bool entropy,
                                                                   const Kernels& k,
                                                                   const at::Tensor& grad = at::Tensor(),
                                                                   const at::Tensor& grad_loss = at::Tensor());

// grad (N, V) of Σ_i grad_loss[i]·loss_i into `out` (may be logits itself).
void backward(const at::Tensor& out, const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
              const std::optional<at::Tensor>& weight, const at::Tensor& lse, const Options& o, const Kernels& k);

// hidden (N, d), lm_weight (V, d), bias (V) or none. Rows that are ignored (and, unless logprobs
// or entropy are asked for, rows of weight 0) never reach a GEMM. Chunks of rows: logits chunk =
// h·Wᵀ, the row kernels, then (compute_grad) dh = g·W and dW += gᵀ·h for ∂Σ_i loss_i, either
// with g materialized by the row kernels or by the softmax-gradient GEMMs.
// Returns (loss, lse, logprobs, entropy, dhidden, dweight, dbias).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_forward(
    const at::Tensor& hidden, const at::Tensor& lm_weight, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, const Options& o, bool compute_grad,
    bool logprobs, bool entropy, const Kernels& k);

// The gradients of Σ_i grad_loss[i]·loss_i, recomputing the logits chunk by chunk.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward(const at::Tensor& grad_loss, const at::Tensor& hidden,
                                                               const at::Tensor& lm_weight, const at::Tensor& target,
                                                               const std::optional<at::Tensor>& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               const at::Tensor& lse, const Options& o,
                                                               const Kernels& k);

}  // namespace ember::ce
