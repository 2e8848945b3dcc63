// cross_entropy family: the CUDA kernel table and registrations.
#include "cross_entropy_ops.h"
#include "device_cuda.h"

namespace ember::bindings {

constexpr ce::Kernels kCrossEntropyCuda{&ce::rows_forward_cuda, &ce::rows_backward_cuda, &ce::softmax_grad_gemm_cuda,
                                        &ce::softmax_grad_gemm_cuda_workspace_bytes};

TORCH_LIBRARY_IMPL(ember, CUDA, m) { CrossEntropyOps<CudaDevice, kCrossEntropyCuda>::register_impls(m); }

}  // namespace ember::bindings
