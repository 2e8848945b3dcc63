// Grouped bf16 GEMM kernel of the block-sparse input gradient (GroupedKind::kDgrad,
// csrc/sparse/grouped.h): dX[:, c0:c1] (+)= dY[:, r0:r1] · W[r0:r1, c0:c1] per group. In CUTLASS's
// terms A is row-major M×K (K contiguous) and B, W's K×N block (N contiguous), is row-major. One
// instantiation per file (minutes of nvcc each): 128×128×64 tiles, cluster 1×1, persistent
// pointer-array cooperative (see grouped_kernels.cuh).
#include "grouped_kernels.cuh"

namespace ember::sparse::grouped_impl {
namespace {
using Config = GroupedGemm<cutlass::layout::RowMajor, cutlass::layout::RowMajor>;
}  // namespace

size_t grouped_dgrad_workspace(int count, int sm_count) { return workspace_bytes<Config>(count, sm_count); }
bool grouped_dgrad(const GemmGroup* groups, int count, const GroupedLaunch& launch) {
  return run<Config>(groups, count, launch);
}

}  // namespace ember::sparse::grouped_impl
