// Grouped bf16 GEMM kernel of the block-sparse forward (GroupedKind::kForward, include/ember/sparse_grouped.h):
// y[:, r0:r1] (+)= x[:, c0:c1] · W[r0:r1, c0:c1]ᵀ per group. In CUTLASS's terms A is row-major
// M×K (K contiguous) and B, stored as W's N×K rows (K contiguous), is column-major. One
// instantiation per file (minutes of nvcc each): 128×128×64 tiles, cluster 1×1, persistent
// pointer-array cooperative (see grouped_kernels.cuh).
#include "grouped_kernels.cuh"

namespace ember::sparse::grouped_impl {

EMBER_GROUPED_GEMM_KERNEL(grouped_forward, GroupedGemm<cutlass::layout::RowMajor, cutlass::layout::ColumnMajor>)

}  // namespace ember::sparse::grouped_impl
