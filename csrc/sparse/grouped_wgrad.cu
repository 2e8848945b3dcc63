// Grouped bf16 GEMM kernel of the block-sparse weight gradient (GroupedKind::kWgrad,
// include/ember/sparse_grouped.h): dW[r0:r1, c0:c1] (+)= dY[:, r0:r1]ᵀ · x[:, c0:c1] per group (K = tokens).
// In CUTLASS's terms A, stored as dY's K×M rows (M contiguous), is column-major, and B, x's K×N
// block (N contiguous), is row-major. One instantiation per file (minutes of nvcc each):
// 128×128×64 tiles, cluster 1×1, persistent pointer-array cooperative (see grouped_kernels.cuh).
#include "grouped_kernels.cuh"

namespace ember::sparse::grouped_impl {

EMBER_GROUPED_GEMM_KERNEL(grouped_wgrad, GroupedGemm<cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>)

}  // namespace ember::sparse::grouped_impl
