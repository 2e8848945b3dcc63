// The CUDA device kind of the Ops<Device> templates (see device.h).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

namespace ember::bindings {

struct CudaDevice {
  static constexpr c10::DeviceType kType = c10::DeviceType::CUDA;
  using Guard = c10::cuda::CUDAGuard;
  // The current stream of the current device: read it under the Guard.
  static void* stream() { return at::cuda::getCurrentCUDAStream().stream(); }
};

}  // namespace ember::bindings
