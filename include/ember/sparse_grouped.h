// sparse family: block-sparse matmuls as batches of independent dense GEMMs ("groups"), the
// interface between the tile schedule (csrc/sparse/sparse_driver.cpp) and the CUDA grouped-GEMM kernels
// (csrc/sparse/grouped_*.cu). Torch-free.
//
// Every group is D (m × n) = A (m × k) · B (k × n) [+ D when accumulate], all of one dtype (bf16),
// row-major/col-major per kind as below (ld* are element strides between consecutive rows of the
// named storage, i.e. the leading dimension of a row-major array):
//   kind      A (m × k)                        B (k × n)                         D (m × n)
//   kForward  x[:, c0:c1]        row-major     W[r0:r1, c0:c1]ᵀ  (W row-major)   y[:, r0:r1]   row-major
//   kDgrad    dY[:, r0:r1]       row-major     W[r0:r1, c0:c1]   (W row-major)   dX[:, c0:c1]  row-major
//   kWgrad    dY[:, r0:r1]ᵀ (dY row-major)     x[:, c0:c1]       (x row-major)   dW[r0:r1, c0:c1] row-major
// i.e. A's storage is row-major (m × k, lda) for kForward / kDgrad and row-major (k × m, lda) for
// kWgrad; B's storage is row-major (n × k, ldb) for kForward and row-major (k × n, ldb) for
// kDgrad / kWgrad; D is row-major (m × n, ldd). Groups of one launch write disjoint D regions.
#pragma once

#include <cstdint>

namespace ember::sparse {

enum class GroupedKind : int { kForward = 0, kDgrad = 1, kWgrad = 2 };

struct GemmGroup {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* d = nullptr;
  int64_t ldd = 0;
};

// Device memory grouped_gemm_cuda needs for `count` groups.
int64_t grouped_gemm_cuda_workspace_bytes(GroupedKind kind, int count);
// Runs all groups in one launch on the current device: D = A·B (accumulate: D += A·B), bf16
// operands, fp32 accumulation. groups: host array. workspace: device memory of
// grouped_gemm_cuda_workspace_bytes(kind, count) bytes. Returns false (nothing launched) when the
// kernel cannot run the batch (not sm_90, misaligned pointers or leading dimensions, ...); the
// caller then runs the groups itself.
bool grouped_gemm_cuda(GroupedKind kind, const GemmGroup* groups, int count, bool accumulate, void* workspace,
                       void* stream);

// The same on the CPU, group by group through ATen (grouped_cpu.cpp); workspace and stream unused.
int64_t grouped_gemm_cpu_workspace_bytes(GroupedKind kind, int count);
bool grouped_gemm_cpu(GroupedKind kind, const GemmGroup* groups, int count, bool accumulate, void* workspace,
                      void* stream);

}  // namespace ember::sparse
