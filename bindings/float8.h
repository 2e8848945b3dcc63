// Shared by the CPU and CUDA bindings of the float8 family: input checks and the tensors ->
// params translation. Checks and dispatch only; the arithmetic lives in csrc/ and include/ember/.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

#include "ember/float8.h"
#include "ember/float8_gemm.h"

namespace ember::bindings {

struct QuantizeCall {
  float8::QuantizeParams params;
  at::Tensor q, scale, workspace;
};

// Checks every argument (the error names the op and the argument), allocates q, scale and the
// workspace on x's device, and fills the params.
QuantizeCall prepare_quantize_fp8(const at::Tensor& x, at::ScalarType dtype, const std::string& granularity,
                                  int64_t block, bool transpose);

struct GemmCall {
  float8::GemmParams params;
  at::Tensor out;
  at::Tensor bias;  // fp32 (N), or undefined
};

// Checks every argument of fp8_gemm (the error names the op and the argument), picks the recipe
// from the scale shapes, allocates out on a's device and fills the params.
GemmCall prepare_fp8_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b, const at::Tensor& b_scale,
                          at::ScalarType out_dtype, const std::optional<at::Tensor>& bias, bool fast_accum);

}  // namespace ember::bindings
