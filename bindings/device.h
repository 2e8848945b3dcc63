// The device kinds every family's Ops<Device, kTable> template is instantiated for
// (bindings/<family>_ops.h): the guard that makes the arguments' device current, and the stream
// the kernels run on. CudaDevice lives in device_cuda.h, which only CUDA builds compile.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <utility>

namespace ember::bindings {

struct CpuDevice {
  static constexpr c10::DeviceType kType = c10::DeviceType::CPU;
  struct Guard {
    explicit Guard(c10::Device) {}
  };
  static void* stream() { return nullptr; }
};

// A family's kernel table (constant data) with the device's current stream filled in.
template <class Device, class Kernels>
Kernels with_stream(Kernels k) {
  k.stream = Device::stream();
  return k;
}

// ---- one device for every tensor argument ------------------------------------------------------
// The dispatcher picks a kernel from the highest-priority device among the arguments, so a kernel
// can be handed tensors of another device: a meta tensor (accelerate's offload), a CPU grad with
// CUDA inputs. Every family registers its kernels through register_impl, which refuses such a
// call before the op's own checks, naming the op and the argument (from the op's schema).
namespace device_check {

struct TensorArg {
  int index, item;  // argument position in the schema; list element, or -1
  c10::Device device;
};
using TensorArgs = c10::SmallVector<TensorArg, 8>;

inline void gather(TensorArgs& out, int i, const at::Tensor& t) {
  if (t.defined()) out.push_back({i, -1, t.device()});
}
inline void gather(TensorArgs& out, int i, const std::optional<at::Tensor>& t) {
  if (t.has_value()) gather(out, i, *t);
}
inline void gather(TensorArgs& out, int i, at::TensorList ts) {
  for (int k = 0; k < static_cast<int>(ts.size()); ++k)
    if (ts[k].defined()) out.push_back({i, k, ts[k].device()});
}
template <class T>
void gather(TensorArgs&, int, const T&) {}  // not a tensor

inline std::string arg_name(const char* op, const TensorArg& a) {
  const auto handle = c10::Dispatcher::singleton().findSchema({std::string("ember::") + op, ""});
  const auto& args = handle ? handle->schema().arguments() : std::vector<c10::Argument>{};
  std::string name =
      a.index < static_cast<int>(args.size()) ? args[a.index].name() : "argument " + std::to_string(a.index);
  return a.item < 0 ? name : name + "[" + std::to_string(a.item) + "]";
}

// The op's device: that of its first tensor on `type`; every tensor must be on it.
inline void check(const char* op, c10::DeviceType type, const TensorArgs& args) {
  const TensorArg* first = nullptr;
  for (const auto& a : args)
    if (a.device.type() == type && first == nullptr) first = &a;
  for (const auto& a : args) {
    if (first != nullptr && a.device == first->device) continue;
    if (first == nullptr)
      TORCH_CHECK(false, "ember.", op, ": ", arg_name(op, a), " must be on a ", c10::DeviceTypeName(type, true),
                  " device (the op's kernel), got ", a.device);
    TORCH_CHECK(false, "ember.", op, ": ", arg_name(op, a), " must be on ", first->device, " (where ",
                arg_name(op, *first), " is), got ", a.device);
  }
}

template <class... Args, size_t... I>
void check_args(const char* op, c10::DeviceType type, std::index_sequence<I...>, const Args&... args) {
  TensorArgs found;
  (gather(found, static_cast<int>(I), args), ...);
  check(op, type, found);
}

}  // namespace device_check

// m.impl(name, fn) with fn's tensor arguments checked to be on one device of Device's kind.
template <class Device, class R, class... Args>
void register_impl(torch::Library& m, const char* name, R (*fn)(Args...)) {
  m.impl(name, [name, fn](Args... args) -> R {
    device_check::check_args(name, Device::kType, std::index_sequence_for<Args...>{}, args...);
    return fn(std::forward<Args>(args)...);
  });
}

}  // namespace ember::bindings
