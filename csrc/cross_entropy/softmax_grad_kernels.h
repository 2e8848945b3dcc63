// The CUTLASS sm90a kernels of the softmax-gradient GEMMs (softmax_grad_gemm.h), one per
// softmax_grad_{dh,dw}.cu file, as plain functions: softmax_grad_gemm.cu includes this header
// without CUTLASS, so the dispatcher compiles in seconds. bf16; the caller has checked the device,
// alignment and extents; false only where CUTLASS itself refuses (can_implement, a workspace it
// would need, initialize or launch failure). None throws.
#pragma once

#include <cuda_runtime_api.h>

#include "softmax_grad_gemm.h"

namespace ember::ce::softmax_grad_impl {

struct SoftmaxGradLaunch {
  cudaStream_t stream = nullptr;
  int device = 0;
  int sm_count = 0;
};

bool softmax_grad_dh(const SoftmaxGradGemmParams& p, const SoftmaxGradLaunch& launch);
int64_t softmax_grad_dh_workspace(const SoftmaxGradGemmParams& p, const SoftmaxGradLaunch& launch);
bool softmax_grad_dw(const SoftmaxGradGemmParams& p, const SoftmaxGradLaunch& launch);

}  // namespace ember::ce::softmax_grad_impl
