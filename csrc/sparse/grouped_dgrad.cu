// Grouped bf16 GEMM kernel of the block-sparse input gradient (GroupedKind::kDgrad,
// include/ember/sparse_grouped.h): dX[:, c0:c1] (+)= dY[:, r0:r1] · W[r0:r1, c0:c1] per group. In CUTLASS's
// terms A is row-major M×K (K contiguous) and B, W's K×N block (N contiguous), is row-major. One
// instantiation per file (minutes of nvcc each): 128×128×64 tiles, cluster 1×1, persistent
// pointer-array cooperative (see grouped_kernels.cuh).
#include "grouped_kernels.cuh"

namespace ember::sparse::grouped_impl {

EMBER_GROUPED_GEMM_KERNEL(grouped_dgrad, GroupedGemm<cutlass::layout::RowMajor, cutlass::layout::RowMajor>)

}  // namespace ember::sparse::grouped_impl
