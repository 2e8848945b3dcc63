// apollo family: the argument checks the CPU and CUDA ops share (apollo_ops.h). Checks only; the
// arithmetic lives in csrc/apollo/ and include/ember/apollo.h.
#pragma once

#include <ATen/ATen.h>

#include "ember/apollo.h"

namespace ember::bindings {

// Checks every argument of apollo_step_ (the error names the op and the argument) and returns
// the group's hyperparameters.
apollo::Hyper check_apollo_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avg,
                                at::TensorList exp_avg_sq, at::TensorList norm_prev, at::IntArrayRef steps,
                                at::IntArrayRef streams, double lr, double beta1, double beta2, double eps,
                                double weight_decay, double scale, bool tensor_scale, double norm_growth_limit,
                                int64_t rank, int64_t update_proj_gap, int64_t seed, bool stochastic_rounding);

void check_apollo_projection(const at::Tensor& out, int64_t seed, int64_t stream, int64_t refresh);

}  // namespace ember::bindings
