// The CUTLASS sm90a kernels of the softmax-gradient GEMMs (include/ember/cross_entropy_softmax_grad.h), one per
// softmax_grad_{dh,dw}.cu file, as plain functions: softmax_grad_gemm.cu includes this header
// without CUTLASS, so the dispatcher compiles in seconds. bf16; the caller has checked the device,
// alignment and extents; false only where CUTLASS itself refuses (can_implement, a workspace it
// would need, initialize or launch failure). None throws.
#pragma once

#include "cutlass_launch.h"
#include "ember/cross_entropy_softmax_grad.h"

namespace ember::ce::softmax_grad_impl {

bool softmax_grad_dh(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch);
int64_t softmax_grad_dh_workspace_bytes(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch);
bool softmax_grad_dw(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch);

}  // namespace ember::ce::softmax_grad_impl
