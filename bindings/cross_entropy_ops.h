// The cross_entropy ops as the dispatcher calls them, for one device kind: checks, the device
// guard, then the driver (csrc/cross_entropy/cross_entropy_driver.h) with that device's kernel
// table. Instantiated by cross_entropy_cpu.cpp and cross_entropy_cuda.cpp; the pattern is
// docs/adding_an_op.md's.
#pragma once

#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cross_entropy/cross_entropy_driver.h"
#include "cross_entropy_checks.h"
#include "device.h"

namespace ember::bindings {

// Device: CpuDevice or CudaDevice (device.h); kTable: the device's kernel table, which each op
// runs on the device's current stream (read under the guard).
template <class Device, const ce::Kernels& kTable>
struct CrossEntropyOps {
  using Opt = std::optional<at::Tensor>;
  using T = at::Tensor;

  static std::tuple<T, T, T, T> forward(const T& logits, const T& target, const Opt& weight, int64_t ignore_index,
                                        double ls, double zl, double cap, bool logprobs, bool entropy) {
    constexpr const char* op = "ember.cross_entropy_forward";
    check_logits(op, logits);
    const auto o =
        check_ce(op, target, weight, logits.size(0), logits.size(1), logits.device(), ignore_index, ls, zl, cap);
    const typename Device::Guard guard(logits.device());
    return ce::forward(logits, target, weight, o, logprobs, entropy, with_stream<Device>(kTable));
  }

  static T backward(const T& grad_loss, const T& logits, const T& target, const Opt& weight, const T& lse,
                    int64_t ignore_index, double ls, double zl, double cap) {
    T out = at::empty(logits.sizes(), logits.options());
    write_backward("ember.cross_entropy_backward", out, grad_loss, logits, target, weight, lse, ignore_index, ls, zl,
                   cap);
    return out;
  }

  static void backward_inplace(const T& logits, const T& grad_loss, const T& target, const Opt& weight, const T& lse,
                               int64_t ignore_index, double ls, double zl, double cap) {
    // rows that share memory (an expanded or overlapping view: a row starts less than V elements
    // after the one before) cannot each hold their own gradient
    constexpr const char* op = "ember.cross_entropy_backward_";
    check_logits(op, logits);
    TORCH_CHECK(logits.size(0) <= 1 || logits.stride(0) >= logits.size(1), op,
                ": logits rows overlap (an expanded or overlapping view, strides ", logits.strides(), " for shape ",
                logits.sizes(), "); the in-place gradient needs rows at least V apart");
    write_backward("ember.cross_entropy_backward_", logits, grad_loss, logits, target, weight, lse, ignore_index, ls,
                   zl, cap);
  }

  // The two backward ops' checks and driver call; out may be logits itself.
  static void write_backward(const char* op, const T& out, const T& grad_loss, const T& logits, const T& target,
                             const Opt& weight, const T& lse, int64_t ignore_index, double ls, double zl, double cap) {
    check_logits(op, logits);
    const auto o =
        check_ce(op, target, weight, logits.size(0), logits.size(1), logits.device(), ignore_index, ls, zl, cap);
    check_backward(op, grad_loss, lse, logits.size(0), logits.device());
    const typename Device::Guard guard(logits.device());
    ce::backward(out, grad_loss, logits, target, weight, lse, o, with_stream<Device>(kTable));
  }

  static std::tuple<T, T, T, T, T, T, T> linear_forward(const T& hidden, const T& lm_weight, const T& target,
                                                        const Opt& weight, const Opt& bias, int64_t ignore_index,
                                                        double ls, double zl, double cap, bool compute_grad,
                                                        bool logprobs, bool entropy) {
    constexpr const char* op = "ember.linear_cross_entropy_forward";
    check_linear(op, hidden, lm_weight, bias);
    const auto o =
        check_ce(op, target, weight, hidden.size(0), lm_weight.size(0), hidden.device(), ignore_index, ls, zl, cap);
    const typename Device::Guard guard(hidden.device());
    return ce::linear_forward(hidden, lm_weight, target, weight, bias, o, compute_grad, logprobs, entropy,
                              with_stream<Device>(kTable));
  }

  static std::tuple<T, T, T> linear_backward(const T& grad_loss, const T& hidden, const T& lm_weight, const T& target,
                                             const Opt& weight, const Opt& bias, const T& lse, int64_t ignore_index,
                                             double ls, double zl, double cap) {
    constexpr const char* op = "ember.linear_cross_entropy_backward";
    check_linear(op, hidden, lm_weight, bias);
    const auto o =
        check_ce(op, target, weight, hidden.size(0), lm_weight.size(0), hidden.device(), ignore_index, ls, zl, cap);
    check_backward(op, grad_loss, lse, hidden.size(0), hidden.device());
    const typename Device::Guard guard(hidden.device());
    return ce::linear_backward(grad_loss, hidden, lm_weight, target, weight, bias, lse, o, with_stream<Device>(kTable));
  }

  // In the device's TORCH_LIBRARY_IMPL block.
  static void register_impls(torch::Library& m) {
    register_impl<Device>(m, "cross_entropy_forward", &forward);
    register_impl<Device>(m, "cross_entropy_backward", &backward);
    register_impl<Device>(m, "cross_entropy_backward_", &backward_inplace);
    register_impl<Device>(m, "linear_cross_entropy_forward", &linear_forward);
    register_impl<Device>(m, "linear_cross_entropy_backward", &linear_backward);
  }
};

}  // namespace ember::bindings
