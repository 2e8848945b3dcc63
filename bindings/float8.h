// Shared by the CPU and CUDA bindings of the float8 family: input checks and the tensors ->
// params translation. Checks and dispatch only; the arithmetic lives in csrc/ and include/ember/.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>

#include "ember/float8.h"

namespace ember::bindings {

struct QuantizeCall {
  float8::QuantizeParams params;
  at::Tensor q, scale, workspace;
};

// Checks every argument (the error names the op and the argument), allocates q, scale and the
// workspace on x's device, and fills the params.
QuantizeCall prepare_quantize_fp8(const at::Tensor& x, at::ScalarType dtype, const std::string& granularity,
                                  int64_t block, bool transpose);

}  // namespace ember::bindings
