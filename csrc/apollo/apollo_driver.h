// The APOLLO step over a list of matrices: the order of the kernels, the transient buffers, and
// the projection GEMM (through ATen: cuBLAS on CUDA, the CPU BLAS on CPU). Device-generic: the
// caller passes the device's kernel table (bindings/apollo_cpu.cpp, apollo_cuda.cpp). Uses ATen,
// so it is not part of include/ember/.
#pragma once

#include <ATen/ATen.h>

#include "ember/apollo.h"

namespace ember::apollo {

// One device's kernels (include/ember/apollo.h) and the stream they run on. The CPU projects
// block by block (project_moments_cpu), so its channel_sumsq and moments are null.
struct Kernels {
  void (*projection)(const Projection*, int, void*);
  void (*channel_sumsq)(const Matrix*, int, void*);
  void (*moments)(const Hyper&, const Matrix*, int, void*);
  void (*finalize)(const Hyper&, const Matrix*, int, void*);
  void (*update)(const Hyper&, const Matrix*, int, void*);
  void* stream = nullptr;
};

// CPU: R = Gv·Pᵀ, ‖Gv_i‖² and the moments, block of channels by block of channels (R's block is
// consumed while it is in cache; no L×r buffer). In csrc/apollo/apollo_cpu.cpp.
void project_moments_cpu(const Hyper& h, const Matrix& m, const at::Tensor& g, const at::Tensor& proj);

// One optimizer step for matrices i: params[i] −= ..., states updated in place. The tensors are
// already checked (bindings/apollo_checks.cpp).
void step(const Hyper& h, at::TensorList params, at::TensorList grads, at::TensorList exp_avg,
          at::TensorList exp_avg_sq, at::TensorList norm_prev, at::IntArrayRef steps, at::IntArrayRef streams,
          const Kernels& kernels);

// Writes P (out: rank × dim, fp32 or bf16) for (seed, stream, refresh).
void fill_projection(const at::Tensor& out, uint64_t seed, uint32_t stream, uint32_t refresh, const Kernels& kernels);

}  // namespace ember::apollo
