// Where and how one CUTLASS sm90a kernel runs: the one launch struct every kernel function of
// csrc/*/*_kernels.h takes, and how a dispatcher fills it for the current device. No CUTLASS
// here, so the dispatchers that include it compile in seconds.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace ember {

struct CutlassLaunch {
  void* workspace = nullptr;  // device memory of at least the kernel's *_workspace_bytes
  size_t workspace_bytes = 0;
  cudaStream_t stream = nullptr;
  int device = 0;     // the current device (cudaGetDevice)
  int sm_count = 0;   // its multiprocessor count (the persistent grid, the tensormaps)
  bool sm90 = false;  // compute capability 9.0: the kernels are built for sm_90a only
};

// The current device's launch on `stream` (no workspace yet); sm90 false when a query fails.
inline CutlassLaunch current_device_launch(void* stream) {
  CutlassLaunch l;
  l.stream = static_cast<cudaStream_t>(stream);
  int major = 0, minor = 0;
  if (cudaGetDevice(&l.device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, l.device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, l.device) != cudaSuccess ||
      cudaDeviceGetAttribute(&l.sm_count, cudaDevAttrMultiProcessorCount, l.device) != cudaSuccess) {
    (void)cudaGetLastError();
    return CutlassLaunch{};
  }
  l.sm90 = major == 9 && minor == 0 && l.sm_count > 0;
  return l;
}

}  // namespace ember
