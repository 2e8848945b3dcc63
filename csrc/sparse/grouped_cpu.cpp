// The CPU's grouped GEMM (include/ember/sparse_grouped.h): each group's A, B and D viewed in place from
// its pointers and leading dimensions, one ATen GEMM per group. It gives the CPU the CUDA path's
// exact addressing, so the CPU tests check the group descriptors the GPU kernel is handed.
#include <ATen/ATen.h>

#include "ember/sparse_grouped.h"

namespace ember::sparse {

int64_t grouped_gemm_cpu_workspace_bytes(GroupedKind, int) { return 0; }

bool grouped_gemm_cpu(GroupedKind kind, const GemmGroup* groups, int count, bool accumulate, void*, void*) {
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16);
  for (int i = 0; i < count; ++i) {
    const GemmGroup& g = groups[i];
    // A (m × k): row-major storage, or for kWgrad the transpose of a row-major k × m.
    const at::Tensor a = kind == GroupedKind::kWgrad
                             ? at::from_blob(const_cast<void*>(g.a), {g.m, g.k}, {1, g.lda}, bf16)
                             : at::from_blob(const_cast<void*>(g.a), {g.m, g.k}, {g.lda, 1}, bf16);
    // B (k × n): for kForward the transpose of a row-major n × k; else row-major.
    const at::Tensor b = kind == GroupedKind::kForward
                             ? at::from_blob(const_cast<void*>(g.b), {g.k, g.n}, {1, g.ldb}, bf16)
                             : at::from_blob(const_cast<void*>(g.b), {g.k, g.n}, {g.ldb, 1}, bf16);
    at::Tensor d = at::from_blob(g.d, {g.m, g.n}, {g.ldd, 1}, bf16);
    if (accumulate) {
      d.addmm_(a, b);
    } else {
      at::mm_out(d, a, b);
    }
  }
  return true;
}

}  // namespace ember::sparse
