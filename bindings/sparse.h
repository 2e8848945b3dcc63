// Shared by the CPU and CUDA bindings of the sparse family: the checked entry points; each
// registration passes its device's bitmask kernel. Checks and dispatch only.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "../csrc/sparse/masked.h"

namespace ember::bindings {

at::Tensor pack_mask(const at::Tensor& mask, int64_t block);
at::Tensor unpack_mask(const at::Tensor& packed, int64_t rows, int64_t cols, int64_t block);
at::Tensor checked_masked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                         const std::optional<at::Tensor>& bias, const sparse::DeviceKernels& k);
std::tuple<at::Tensor, at::Tensor> checked_masked_linear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                                                          bool need_x, bool need_w, const sparse::DeviceKernels& k);

}  // namespace ember::bindings
