// The last two steps of every CUTLASS launch in ember: initialize (kernel attributes, workspace)
// and run, each failure turned into `false` with the CUDA error it left cleared, so that the
// caller can fall back instead of throwing across a torch-free API.
#pragma once

#include <cuda_runtime.h>

#include "cutlass/cutlass.h"

namespace ember {

template <class Gemm>
bool initialize_and_run(typename Gemm::Arguments const& args, void* workspace, cudaStream_t stream) {
  Gemm gemm;
  if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) {
    (void)cudaGetLastError();  // cudaFuncSetAttribute failures are not sticky
    return false;
  }
  if (gemm.run(stream) != cutlass::Status::kSuccess) {
    (void)cudaGetLastError();  // e.g. no kernel image for this device
    return false;
  }
  return true;
}

}  // namespace ember
