// The CUTLASS sm90a kernels of the bitmask GEMMs (include/ember/sparse_bitmask_gemm.h), one per
// bitmask_gemm_{forward,dgrad,wgrad}.cu file, as plain functions: bitmask_gemm.cu includes this
// header without CUTLASS, so the dispatcher compiles in seconds while each kernel file (one sm90
// instantiation, minutes of nvcc) compiles on its own.
//
// bf16 operands, fp32 accumulation, bf16 result. The caller (bitmask_gemm.cu) has checked the
// device, the pointers' alignment and the extents; a kernel function returns false only where
// CUTLASS itself refuses the problem (can_implement, a workspace it would need, initialize or
// launch failure). None throws.
#pragma once

#include "cutlass_launch.h"
#include "ember/sparse_bitmask_gemm.h"

namespace ember::sparse::bitmask_impl {

bool bitmask_forward(const BitmaskGemmParams& p, const CutlassLaunch& launch);
bool bitmask_dgrad(const BitmaskGemmParams& p, const CutlassLaunch& launch);
bool bitmask_wgrad(const BitmaskGemmParams& p, const CutlassLaunch& launch);

}  // namespace ember::sparse::bitmask_impl
