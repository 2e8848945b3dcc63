// The last steps of every CUTLASS launch in ember: initialize (kernel attributes, workspace) and
// run, each failure turned into `false` with the CUDA error it left cleared, so that the caller
// can fall back instead of throwing across a torch-free API; and before them, the problem and
// workspace checks (check_and_run); run_config for a configuration that builds its own arguments.
#pragma once

#include <cuda_runtime.h>

#include "cutlass/cutlass.h"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass_launch.h"

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
bool check_and_run(typename Gemm::Arguments const& args, const CutlassLaunch& launch) {
  if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return false;
  const size_t needed = Gemm::get_workspace_size(args);
  if (needed > launch.workspace_bytes || (needed > 0 && launch.workspace == nullptr)) return false;
  return initialize_and_run<Gemm>(args, launch.workspace, launch.stream);
}

// The device and SM count a persistent kernel's grid is sized for.
inline cutlass::KernelHardwareInfo hardware_info(const CutlassLaunch& launch) {
  cutlass::KernelHardwareInfo info;
  info.device_id = launch.device;
  info.sm_count = launch.sm_count;
  return info;
}

// Runs a configuration whose static arguments(p, launch) builds its CUTLASS arguments.
template <class Config, class Params>
bool run_config(const Params& p, const CutlassLaunch& launch) {
  return check_and_run<typename Config::Gemm>(Config::arguments(p, launch), launch);
}

}  // namespace ember
