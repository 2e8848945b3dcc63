// Small pieces every family's binding shares.
#pragma once

#include <c10/core/Device.h>

namespace ember::bindings {

// The device guard of CPU registrations (CUDA ones use c10::cuda::CUDAGuard).
struct NoDeviceGuard {
  explicit NoDeviceGuard(c10::Device) {}
};

}  // namespace ember::bindings
