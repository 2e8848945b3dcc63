// The CUTLASS sm90a grouped-GEMM kernels of the block-sparse matmuls (csrc/sparse/grouped.h), one
// per grouped_{forward,dgrad,wgrad}.cu file, as plain functions: grouped_gemm.cu includes this
// header without CUTLASS, so the dispatcher compiles in seconds while each kernel file (one sm90
// instantiation, minutes of nvcc) compiles on its own.
//
// Every kernel runs all `count` groups of one GroupedKind in one persistent launch, bf16 operands,
// fp32 accumulation, bf16 D (row-major): D = A·B, or D += A·B when accumulate. The caller
// (grouped_gemm.cu) has checked the device, pointers, leading dimensions and extents; a kernel
// function returns false only where CUTLASS itself refuses the batch (can_implement, workspace
// too small, copy / initialize / launch failure). None throws.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "grouped.h"

namespace ember::sparse::grouped_impl {

// Where and how a kernel runs.
struct GroupedLaunch {
  void* workspace = nullptr;  // device memory of the kernel's *_workspace(count, sm_count) bytes
  size_t workspace_bytes = 0;
  cudaStream_t stream = nullptr;
  int device = 0;             // the current device (cudaGetDevice)
  int sm_count = 0;           // its multiprocessor count (> 0: the persistent grid and the tensormaps)
  bool accumulate = false;    // D += A·B (beta = 1, C = D) instead of D = A·B
};

// Device bytes a kernel needs for `count` groups on a device of `sm_count` SMs: the per-group
// arrays it copies there (problem sizes, pointers, strides) and CUTLASS's own workspace (per-SM
// TMA descriptors), plus slack to align the caller's pointer. Depends only on count and sm_count.
//   kForward: A M×K row-major, B N×K row-major (CUTLASS column-major B), D M×N row-major
size_t grouped_forward_workspace(int count, int sm_count);
bool grouped_forward(const GemmGroup* groups, int count, const GroupedLaunch& launch);
//   kDgrad: A M×K row-major, B K×N row-major, D M×N row-major
size_t grouped_dgrad_workspace(int count, int sm_count);
bool grouped_dgrad(const GemmGroup* groups, int count, const GroupedLaunch& launch);
//   kWgrad: A stored K×M row-major (CUTLASS column-major A), B K×N row-major, D M×N row-major
size_t grouped_wgrad_workspace(int count, int sm_count);
bool grouped_wgrad(const GemmGroup* groups, int count, const GroupedLaunch& launch);

}  // namespace ember::sparse::grouped_impl
