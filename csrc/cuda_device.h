// What the sm_90a kernels' dispatchers check first: the current CUDA device (its id, its SM
// count, and whether it is compute capability 9.0: the kernels are built for sm_90a only), and
// their pointers' alignment.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ember {

struct CudaDevice {
  int id = 0;
  int sm_count = 0;
  bool sm90 = false;
};

// What TMA needs of a base address: non-null and 16-byte aligned.
inline bool aligned16(const void* ptr) { return ptr != nullptr && (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

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
