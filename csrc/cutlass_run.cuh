// The last steps of every CUTLASS launch in ember: initialize (kernel attributes, workspace) and
// run, each failure turned into `false` with the CUDA error it left cleared, so that the caller
// can fall back instead of throwing across a torch-free API; and before them, the problem and
// workspace checks (check_and_run).
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

// can_implement, the workspace the problem needs against the caller's, then initialize_and_run;
// false (nothing launched) when CUTLASS refuses the problem or the workspace is short.
template <class Gemm>
bool check_and_run(typename Gemm::Arguments const& args, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return false;
  const size_t needed = Gemm::get_workspace_size(args);
  if (needed > workspace_bytes || (needed > 0 && workspace == nullptr)) return false;
  return initialize_and_run<Gemm>(args, workspace, stream);
}

}  // namespace ember
