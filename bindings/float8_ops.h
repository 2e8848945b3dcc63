// The float8 ops as the dispatcher calls them, for one device kind: checks, the device guard, then
// the driver (csrc/float8/float8_driver.h) with that device's kernel table. Instantiated by
// float8_cpu.cpp and float8_cuda.cpp; the pattern is docs/adding_an_op.md's.
#pragma once

#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "device.h"
#include "float8/float8_driver.h"
#include "float8_checks.h"

namespace ember::bindings {

// Device: CpuDevice or CudaDevice (device.h); kTable: the device's kernel table, which each op
// runs on the device's current stream (read under the guard).
template <class Device, const float8::Kernels& kTable>
struct Float8Ops {
  using T = at::Tensor;

  static std::tuple<T, T> quantize_fp8(const T& x, at::ScalarType dtype, c10::string_view granularity, int64_t block,
                                       bool transpose) {
    const auto p = check_quantize_fp8(x, dtype, std::string(granularity), block, transpose);
    const typename Device::Guard guard(x.device());
    return float8::quantize(x, dtype, p, with_stream<Device>(kTable));
  }

  static T fp8_gemm(const T& a, const T& a_scale, const T& b, const T& b_scale, at::ScalarType out_dtype,
                    const std::optional<T>& bias, bool fast_accum) {
    // every tensor is on a's device (register_impl): the guard and the outputs follow a
    const auto p = check_fp8_gemm(a, a_scale, b, b_scale, out_dtype, bias, fast_accum);
    const typename Device::Guard guard(a.device());
    return float8::gemm(a, a_scale, b, b_scale, out_dtype, bias, p, with_stream<Device>(kTable));
  }

  // In the device's TORCH_LIBRARY_IMPL block.
  static void register_impls(torch::Library& m) {
    register_impl<Device>(m, "quantize_fp8", &quantize_fp8);
    register_impl<Device>(m, "fp8_gemm", &fp8_gemm);
  }
};

}  // namespace ember::bindings
