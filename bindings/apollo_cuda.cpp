// apollo family: CUDA registrations (same checks as the CPU path, see apollo.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/apollo/step.h"
#include "apollo.h"

namespace ember::bindings {
namespace {

apollo::Launchers cuda_launchers() {
  return apollo::Launchers{apollo::projection_cuda, apollo::channel_sumsq_cuda, apollo::moments_cuda,
                           apollo::finalize_cuda, apollo::update_cuda, at::cuda::getCurrentCUDAStream().stream()};
}

void apollo_step_cuda(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                      at::TensorList norm_prev, at::IntArrayRef steps, at::IntArrayRef streams, double lr, double beta1,
                      double beta2, double eps, double weight_decay, double scale, bool tensor_scale,
                      double norm_growth_limit, int64_t rank, int64_t update_proj_gap, int64_t seed,
                      bool stochastic_rounding) {
  const auto h = check_apollo_step(params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, lr, beta1, beta2, eps,
                                   weight_decay, scale, tensor_scale, norm_growth_limit, rank, update_proj_gap, seed,
                                   stochastic_rounding);
  if (params.empty()) return;
  const c10::cuda::CUDAGuard guard(params[0].device());
  apollo::step(h, params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, cuda_launchers());
}

void apollo_projection_cuda(const at::Tensor& out, int64_t seed, int64_t stream, int64_t refresh) {
  check_apollo_projection(out, seed, stream, refresh);
  const c10::cuda::CUDAGuard guard(out.device());
  apollo::fill_projection(out, static_cast<uint64_t>(seed), static_cast<uint32_t>(stream),
                          static_cast<uint32_t>(refresh), cuda_launchers());
}

}  // namespace

TORCH_LIBRARY_IMPL(ember, CUDA, m) {
  m.impl("apollo_step_", &apollo_step_cuda);
  m.impl("apollo_projection_", &apollo_projection_cuda);
}

}  // namespace ember::bindings
