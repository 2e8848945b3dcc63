// float8 family: the argument checks the CPU and CUDA ops share (float8_ops.h). Each checks every
// argument (the error names the op and the argument) and returns the params with the pointers
// unset; the driver (csrc/float8/float8_driver.h) allocates the outputs and fills them.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "ember/float8.h"
#include "ember/float8_gemm.h"

namespace ember::bindings {

float8::QuantizeParams check_quantize_fp8(const at::Tensor& x, at::ScalarType dtype, const std::string& granularity,
                                          int64_t block, bool transpose);

// Also picks the recipe from the scale shapes.
float8::GemmParams check_fp8_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b,
                                  const at::Tensor& b_scale, at::ScalarType out_dtype,
                                  const std::optional<at::Tensor>& bias, bool fast_accum);

}  // namespace ember::bindings
