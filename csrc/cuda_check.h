// The CUDA launchers' one error check: a failed launch or call becomes an exception naming the
// op and the step (the binding turns it into a Python RuntimeError).
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace ember {

inline void cuda_check(cudaError_t err, const char* op, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(op) + ": " + what + ": " + cudaGetErrorString(err));
}

}  // namespace ember
