// The apollo ops as the dispatcher calls them, for one device kind: checks, the device guard, then
// the driver (csrc/apollo/apollo_driver.h) with that device's kernel table. Instantiated by
// apollo_cpu.cpp and apollo_cuda.cpp; the pattern is docs/adding_an_op.md's.
#pragma once

#include <torch/library.h>

#include "apollo/apollo_driver.h"
#include "apollo_checks.h"
#include "device.h"

namespace ember::bindings {

// Device: CpuDevice or CudaDevice (device.h); kTable: the device's kernel table, which each op
// runs on the device's current stream (read under the guard).
template <class Device, const apollo::Kernels& kTable>
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
    apollo::step(h, params, grads, exp_avg, exp_avg_sq, norm_prev, steps, streams, with_stream<Device>(kTable));
  }

  static void projection(const at::Tensor& out, int64_t seed, int64_t stream, int64_t refresh) {
    check_apollo_projection(out, seed, stream, refresh);
    const typename Device::Guard guard(out.device());
    apollo::fill_projection(out, static_cast<uint64_t>(seed), static_cast<uint32_t>(stream),
                            static_cast<uint32_t>(refresh), with_stream<Device>(kTable));
  }

  // In the device's TORCH_LIBRARY_IMPL block.
  static void register_impls(torch::Library& m) {
    register_impl<Device>(m, "apollo_step_", &step);
    register_impl<Device>(m, "apollo_projection_", &projection);
  }
};

}  // namespace ember::bindings
