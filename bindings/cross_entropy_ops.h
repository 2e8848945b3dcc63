// The cross_entropy ops as the dispatcher calls them, for one device kind: checks, a device
// guard, then the driver with that device's row kernels. Instantiated by cross_entropy.cpp (CPU)
// and cross_entropy_cuda.cpp (CUDA).
#pragma once

#include <ATen/MemoryOverlap.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../csrc/cross_entropy/driver.h"
#include "cross_entropy.h"

namespace ember::bindings {

template <class Device>
struct CrossEntropyOps {
  using Opt = std::optional<at::Tensor>;
  using T = at::Tensor;

  static void check_backward(const char* op, const T& grad_loss, const T& lse, int64_t rows, at::Device device) {
    TORCH_CHECK(grad_loss.scalar_type() == at::kFloat && lse.scalar_type() == at::kFloat, op,
                ": grad_loss and lse must be float32, got ", grad_loss.scalar_type(), " and ", lse.scalar_type());
    check_rows_tensor(op, "grad_loss", grad_loss, rows, device);
    check_rows_tensor(op, "lse", lse, rows, device);
    TORCH_CHECK(lse.is_contiguous(), op, ": lse must be contiguous");
  }

  static std::tuple<T, T, T, T> forward(const T& logits, const T& target, const Opt& weight, int64_t ignore_index,
                                        double ls, double zl, double cap, bool logprobs, bool entropy) {
    constexpr const char* op = "ember.cross_entropy_forward";
    check_logits(op, logits);
    const auto o = check_ce(op, target, weight, logits.size(0), logits.size(1), logits.device(), ignore_index, ls, zl, cap);
    const typename Device::Guard guard(logits.device());
    return ce::forward(logits, target, weight, o, logprobs, entropy, Device::kernels());
  }

  static T backward(const T& grad_loss, const T& logits, const T& target, const Opt& weight, const T& lse,
                    int64_t ignore_index, double ls, double zl, double cap) {
    T out = at::empty(logits.sizes(), logits.options());
    write_backward("ember.cross_entropy_backward", out, grad_loss, logits, target, weight, lse, ignore_index, ls, zl, cap);
    return out;
  }

  static void backward_inplace(const T& logits, const T& grad_loss, const T& target, const Opt& weight, const T& lse,
                               int64_t ignore_index, double ls, double zl, double cap) {
    // rows that share memory (an expanded or overlapping view) cannot each hold their own gradient
    TORCH_CHECK(at::has_internal_overlap(logits) != at::MemOverlap::Yes,
                "ember.cross_entropy_backward_: logits overlap themselves (an expanded or overlapping view, strides ",
                logits.strides(), "); the in-place gradient needs a tensor whose elements are distinct");
    write_backward("ember.cross_entropy_backward_", logits, grad_loss, logits, target, weight, lse, ignore_index, ls, zl,
                   cap);
  }

  // The two backward ops' checks and driver call; out may be logits itself.
  static void write_backward(const char* op, const T& out, const T& grad_loss, const T& logits, const T& target,
                             const Opt& weight, const T& lse, int64_t ignore_index, double ls, double zl, double cap) {
    check_logits(op, logits);
    const auto o = check_ce(op, target, weight, logits.size(0), logits.size(1), logits.device(), ignore_index, ls, zl, cap);
    check_backward(op, grad_loss, lse, logits.size(0), logits.device());
    const typename Device::Guard guard(logits.device());
    ce::backward(out, grad_loss, logits, target, weight, lse, o, Device::kernels());
  }

  static std::tuple<T, T, T, T, T, T, T> linear_forward(const T& hidden, const T& lm_weight, const T& target,
                                                        const Opt& weight, const Opt& bias, int64_t ignore_index, double ls,
                                                        double zl, double cap, bool compute_grad, bool logprobs,
                                                        bool entropy) {
    constexpr const char* op = "ember.linear_cross_entropy_forward";
    check_linear(op, hidden, lm_weight, bias);
    const auto o = check_ce(op, target, weight, hidden.size(0), lm_weight.size(0), hidden.device(), ignore_index, ls, zl, cap);
    const typename Device::Guard guard(hidden.device());
    return ce::linear_forward(hidden, lm_weight, target, weight, bias, o, compute_grad, logprobs, entropy, Device::kernels());
  }

  static std::tuple<T, T, T> linear_backward(const T& grad_loss, const T& hidden, const T& lm_weight, const T& target,
                                             const Opt& weight, const Opt& bias, const T& lse, int64_t ignore_index,
                                             double ls, double zl, double cap) {
    constexpr const char* op = "ember.linear_cross_entropy_backward";
    check_linear(op, hidden, lm_weight, bias);
    const auto o = check_ce(op, target, weight, hidden.size(0), lm_weight.size(0), hidden.device(), ignore_index, ls, zl, cap);
    check_backward(op, grad_loss, lse, hidden.size(0), hidden.device());
    const typename Device::Guard guard(hidden.device());
    return ce::linear_backward(grad_loss, hidden, lm_weight, target, weight, bias, lse, o, Device::kernels());
  }
};

// Registers the five ops of one device kind (in a TORCH_LIBRARY_IMPL block).
template <class Device>
void register_cross_entropy(torch::Library& m) {
  using Ops = CrossEntropyOps<Device>;
  m.impl("cross_entropy_forward", &Ops::forward);
  m.impl("cross_entropy_backward", &Ops::backward);
  m.impl("cross_entropy_backward_", &Ops::backward_inplace);
  m.impl("linear_cross_entropy_forward", &Ops::linear_forward);
  m.impl("linear_cross_entropy_backward", &Ops::linear_backward);
}

}  // namespace ember::bindings
