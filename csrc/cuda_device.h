// The current CUDA device as the sm_90a kernels' dispatchers need it: its id, its SM count, and
// whether it is compute capability 9.0 (the kernels are built for sm_90a only).
#pragma once

#include <cuda_runtime.h>

namespace ember {

struct CudaDevice {
  int id = 0;
  int sm_count = 0;
  bool sm90 = false;
};

inline CudaDevice current_cuda_device() {
  CudaDevice d;
  int major = 0, minor = 0;
  if (cudaGetDevice(&d.id) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d.id) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d.id) != cudaSuccess ||
      cudaDeviceGetAttribute(&d.sm_count, cudaDevAttrMultiProcessorCount, d.id) != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaDevice{};
  }
  d.sm90 = major == 9 && minor == 0 && d.sm_count > 0;
  return d;
}

}  // namespace ember
