// sparse family: the CPU kernel table and registrations. No bitmask GEMM: the CPU takes the tiled
// path (csrc/sparse/sparse_driver.cpp).
#include "sparse_ops.h"

namespace ember::bindings {

constexpr sparse::Kernels kSparseCpu{&sparse::apply_bitmask_cpu, &sparse::grouped_gemm_cpu,
                                     &sparse::grouped_gemm_cpu_workspace_bytes, nullptr};

TORCH_LIBRARY_IMPL(ember, CPU, m) { SparseOps<CpuDevice, kSparseCpu>::register_impls(m); }

}  // namespace ember::bindings
