// sparse family: the CUDA kernel table (bitmask apply, grouped GEMM, bitmask GEMMs) and
// registrations.
#include "device_cuda.h"
#include "sparse_ops.h"

namespace ember::bindings {

constexpr sparse::Kernels kSparseCuda{&sparse::apply_bitmask_cuda, &sparse::grouped_gemm_cuda,
                                      &sparse::grouped_gemm_cuda_workspace_bytes, &sparse::bitmask_gemm_cuda};

TORCH_LIBRARY_IMPL(ember, CUDA, m) { SparseOps<CudaDevice, kSparseCuda>::register_impls(m); }

}  // namespace ember::bindings
