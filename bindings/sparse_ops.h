// The sparse ops as the dispatcher calls them, for one device kind: checks, the device guard, then
// the driver (csrc/sparse/sparse_driver.h) with that device's kernel table. Instantiated by
// sparse_cpu.cpp and sparse_cuda.cpp; the pattern is docs/adding_an_op.md's.
#pragma once

#include <torch/library.h>

#include <optional>
#include <tuple>

#include "device.h"
#include "sparse/sparse_driver.h"
#include "sparse_checks.h"

namespace ember::bindings {

// Device: CpuDevice or CudaDevice (device.h); kTable: the device's kernel table, which each op
// runs on the device's current stream (read under the guard).
template <class Device, const sparse::Kernels& kTable>
struct SparseOps {
  using T = at::Tensor;

  static T pack_mask(const T& mask, int64_t block) {
    check_pack_mask(mask, block);
    const typename Device::Guard guard(mask.device());
    return sparse::pack_mask(mask, block);
  }

  static T unpack_mask(const T& packed, int64_t rows, int64_t cols, int64_t block) {
    check_unpack_mask(packed, rows, cols, block);
    const typename Device::Guard guard(packed.device());
    return sparse::unpack_mask(packed, rows, cols, block);
  }

  static T masked_linear(const T& x, const T& weight, const T& mask, int64_t block, const std::optional<T>& bias) {
    check_masked_linear(x, weight, mask, block, bias);
    const typename Device::Guard guard(x.device());
    return sparse::masked_linear(x, weight, mask, block, bias, with_stream<Device>(kTable));
  }

  static std::tuple<T, T> masked_linear_backward(const T& grad, const T& x, const T& weight, const T& mask,
                                                 int64_t block, bool need_x, bool need_w) {
    check_masked_linear_backward(grad, x, weight, mask, block);
    const typename Device::Guard guard(x.device());
    auto [dx, dw] =
        sparse::masked_linear_backward(grad, x, weight, mask, block, need_x, need_w, with_stream<Device>(kTable));
    // Outputs not asked for come back empty (a schema's Tensor cannot be None).
    return {dx.defined() ? dx : at::empty({0}, x.options()), dw.defined() ? dw : at::empty({0}, weight.options())};
  }

  // In the device's TORCH_LIBRARY_IMPL block.
  static void register_impls(torch::Library& m) {
    register_impl<Device>(m, "pack_mask", &pack_mask);
    register_impl<Device>(m, "unpack_mask", &unpack_mask);
    register_impl<Device>(m, "masked_linear", &masked_linear);
    register_impl<Device>(m, "masked_linear_backward", &masked_linear_backward);
  }
};

}  // namespace ember::bindings
