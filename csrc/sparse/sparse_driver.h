// sparse family: mask packing and masked_linear over ATen tensors (device-generic: the caller
// passes the device's kernel table, bindings/sparse_cpu.cpp, sparse_cuda.cpp). The binding checks
// the arguments first (bindings/sparse_checks.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "ember/sparse_bitmask_gemm.h"
#include "ember/sparse.h"
#include "ember/sparse_grouped.h"

namespace ember::sparse {

// mask (rows, cols) bool -> bitmask words (block 0) or per-tile bytes (block 16/32/64/128).
at::Tensor pack_mask(const at::Tensor& mask, int64_t block);
at::Tensor unpack_mask(const at::Tensor& packed, int64_t rows, int64_t cols, int64_t block);

// The device's kernels and the stream they run on: the bitmask apply (apply_bitmask_cpu /
// _cuda), the grouped GEMM that runs a wave of block-mask GEMMs (grouped_gemm_cuda in one launch,
// grouped_gemm_cpu group by group), and, on CUDA, the bitmask GEMMs that apply the mask inside
// the GEMM (bitmask_gemm_cuda; null on the CPU, which takes the tiled path).
struct Kernels {
  void (*apply_bitmask)(const BitmaskParams&, void*);
  bool (*grouped_gemm)(GroupedKind, const GemmGroup*, int, bool, void*, void*);
  int64_t (*grouped_gemm_workspace_bytes)(GroupedKind, int);
  bool (*bitmask_gemm)(const BitmaskGemmParams&, bool, void*);
  void* stream = nullptr;
};

// y = x·(W⊙M)ᵀ + bias; x (N, in), weight (out, in), mask packed for weight's shape.
// Pruned weights are never read and count as +0: every path (bitmask or block mask, CPU or CUDA)
// equals an IEEE GEMM over where(M, W, 0). NaN/inf stored in a pruned weight never shows; a
// non-finite x (dX: grad) element times a pruned +0 is NaN (the block path, which skips pruned
// tiles, marks those outputs NaN itself); pruned weights get exactly +0 gradient.
at::Tensor masked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                         const std::optional<at::Tensor>& bias, const Kernels& k);
// (dx, dw) = (g·(W⊙M), (gᵀ·x)⊙M), each only when asked (else undefined).
std::tuple<at::Tensor, at::Tensor> masked_linear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& weight, const at::Tensor& mask,
                                                          int64_t block, bool need_x, bool need_w, const Kernels& k);

}  // namespace ember::sparse
