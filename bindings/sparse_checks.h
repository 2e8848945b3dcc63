// sparse family: the argument checks the CPU and CUDA ops share (sparse_ops.h). Checks only; the
// arithmetic lives in csrc/sparse/ and include/ember/sparse*.h.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace ember::bindings {

void check_pack_mask(const at::Tensor& mask, int64_t block);
void check_unpack_mask(const at::Tensor& packed, int64_t rows, int64_t cols, int64_t block);
void check_masked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                         const std::optional<at::Tensor>& bias);
void check_masked_linear_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& mask, int64_t block);

}  // namespace ember::bindings
