// apollo family: CUDA registrations (same checks and driver as the CPU path, see apollo_ops.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "apollo_ops.h"

namespace ember::bindings {
namespace {

struct CudaDevice {
  using Guard = c10::cuda::CUDAGuard;
  static apollo::Launchers launchers() {
    return apollo::Launchers{apollo::projection_cuda, apollo::channel_sumsq_cuda, apollo::moments_cuda,
                             apollo::finalize_cuda, apollo::update_cuda, at::cuda::getCurrentCUDAStream().stream()};
  }
};

using Ops = ApolloOps<CudaDevice>;

}  // namespace

TORCH_LIBRARY_IMPL(ember, CUDA, m) {
  m.impl("apollo_step_", &Ops::step);
  m.impl("apollo_projection_", &Ops::projection);
}

}  // namespace ember::bindings
