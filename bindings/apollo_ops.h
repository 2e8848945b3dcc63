// The apollo ops as the dispatcher calls them, for one device kind: checks, a device guard, then
// the step driver with that device's launchers. Instantiated by apollo.cpp (CPU) and
// apollo_cuda.cpp (CUDA).
#pragma once

#include "../csrc/apollo/step.h"
#include "apollo.h"

namespace ember::bindings {

template <class Device>
struct ApolloOps {
  static void step(at::TensorList params, at::TensorList grads, at::TensorList exp_avg, at::TensorList exp_avg_sq,
                   at::TensorList norm_prev, at::IntArrayRef steps, at::IntArrayRef streams, double lr, double beta1,
                   double beta2, double eps, double weight_decay, double scale, bool tensor_scale,
                   double norm_growth_limit, int64_t rank, int64_t update_proj_gap, int64_t seed,
                   bool stochastic_rounding) {
    const auto h = check_apollo_step(params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, lr, beta1, beta2,
                                     eps, weight_decay, scale, tensor_scale, norm_growth_limit, rank, update_proj_gap,
                                     seed, stochastic_rounding);
    if (params.empty()) return;
    const typename Device::Guard guard(params[0].device());
    apollo::step(h, params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, Device::launchers());
  }

  static void projection(const at::Tensor& out, int64_t seed, int64_t stream, int64_t refresh) {
    check_apollo_projection(out, seed, stream, refresh);
    const typename Device::Guard guard(out.device());
    apollo::fill_projection(out, static_cast<uint64_t>(seed), static_cast<uint32_t>(stream),
                            static_cast<uint32_t>(refresh), Device::launchers());
  }
};

}  // namespace ember::bindings
