// cross_entropy family: CUDA registrations (same checks and driver as the CPU path).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cross_entropy_ops.h"

namespace ember::bindings {
namespace {

struct CudaDevice {
  using Guard = c10::cuda::CUDAGuard;
  static ce::RowKernels kernels() {
    return ce::RowKernels{ce::rows_forward_cuda, ce::rows_backward_cuda, ce::softmax_grad_gemm_cuda,
                          ce::softmax_grad_gemm_workspace_cuda, at::cuda::getCurrentCUDAStream().stream()};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(ember, CUDA, m) {
  register_cross_entropy<CudaDevice>(m);
}

}  // namespace ember::bindings
