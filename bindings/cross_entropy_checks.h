// cross_entropy family: the argument checks the CPU and CUDA ops share (cross_entropy_ops.h),
// returning the options. Checks only; the arithmetic lives in csrc/cross_entropy/ and include/ember/.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "ember/cross_entropy.h"

namespace ember::bindings {

// Checks target / weight / options against N rows of V classes on `device`.
ce::Options check_ce(const char* op, const at::Tensor& target, const std::optional<at::Tensor>& weight, int64_t rows,
                     int64_t vocab, at::Device device, int64_t ignore_index, double label_smoothing, double z_loss,
                     double softcap);
void check_logits(const char* op, const at::Tensor& logits);
void check_linear(const char* op, const at::Tensor& hidden, const at::Tensor& lm_weight,
                  const std::optional<at::Tensor>& bias);
void check_rows_tensor(const char* op, const char* name, const at::Tensor& t, int64_t rows, at::Device device);
// grad_loss and lse of a backward op: (N) on `device`, grad_loss fp32, lse float64 and contiguous.
void check_backward(const char* op, const at::Tensor& grad_loss, const at::Tensor& lse, int64_t rows,
                    at::Device device);

}  // namespace ember::bindings
