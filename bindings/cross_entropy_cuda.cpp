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
    return ce::RowKernels{ce::rows_forward_cuda, ce::rows_backward_cuda, at::cuda::getCurrentCUDAStream().stream()};
  }
};

using Ops = CrossEntropyOps<CudaDevice>;

}  // namespace

TORCH_LIBRARY_IMPL(ember, CUDA, m) {
  m.impl("cross_entropy_forward", &Ops::forward);
  m.impl("cross_entropy_backward", &Ops::backward);
  m.impl("cross_entropy_backward_", &Ops::backward_inplace);
  m.impl("linear_cross_entropy_forward", &Ops::linear_forward);
  m.impl("linear_cross_entropy_backward", &Ops::linear_backward);
}

}  // namespace ember::bindings
