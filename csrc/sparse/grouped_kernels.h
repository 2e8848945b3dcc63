// The CUTLASS sm90a grouped-GEMM kernels of the block-sparse matmuls (include/ember/sparse_grouped.h), one
// per grouped_{forward,dgrad,wgrad}.cu file, as plain functions: grouped_gemm.cu includes this
// header without CUTLASS, so the dispatcher compiles in seconds while each kernel file (one sm90
// instantiation, minutes of nvcc) compiles on its own.
//
// Every kernel runs all `count` groups of one GroupedKind in one persistent launch, bf16 operands,
// fp32 accumulation, bf16 D (row-major): D = A·B, or D += A·B when accumulate (beta = 1, C = D). The caller
// (grouped_gemm.cu) has checked the device, pointers, leading dimensions and extents; a kernel
// function returns false only where CUTLASS itself refuses the batch (can_implement, workspace
// too small, copy / initialize / launch failure). None throws.
#pragma once

#include <cstddef>

#include "cutlass_launch.h"
#include "ember/sparse_grouped.h"

namespace ember::sparse::grouped_impl {

// Device bytes a kernel needs for `count` groups on a device of `sm_count` SMs: the per-group
// arrays it copies there (problem sizes, pointers, strides) and CUTLASS's own workspace (per-SM
// TMA descriptors), plus slack to align the caller's pointer. Depends only on count and sm_count.
//   kForward: A M×K row-major, B N×K row-major (CUTLASS column-major B), D M×N row-major
size_t grouped_forward_workspace_bytes(int count, int sm_count);
bool grouped_forward(const GemmGroup* groups, int count, bool accumulate, const CutlassLaunch& launch);
//   kDgrad: A M×K row-major, B K×N row-major, D M×N row-major
size_t grouped_dgrad_workspace_bytes(int count, int sm_count);
bool grouped_dgrad(const GemmGroup* groups, int count, bool accumulate, const CutlassLaunch& launch);
//   kWgrad: A stored K×M row-major (CUTLASS column-major A), B K×N row-major, D M×N row-major
size_t grouped_wgrad_workspace_bytes(int count, int sm_count);
bool grouped_wgrad(const GemmGroup* groups, int count, bool accumulate, const CutlassLaunch& launch);

}  // namespace ember::sparse::grouped_impl
