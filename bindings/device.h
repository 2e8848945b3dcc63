// The device kinds every family's Ops<Device, kTable> template is instantiated for
// (bindings/<family>_ops.h): the guard that makes the arguments' device current, and the stream
// the kernels run on. CudaDevice lives in device_cuda.h, which only CUDA builds compile.
#pragma once

#include <c10/core/Device.h>

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

}  // namespace ember::bindings
