// The CUTLASS sm90a kernels of the scaled fp8 GEMM (include/ember/float8_gemm.h), one per
// gemm_*.cu file, as plain functions: gemm_cuda.cu includes this header without CUTLASS, so the
// dispatcher compiles in seconds while each kernel file compiles (minutes) on its own.
//
// Every kernel computes out(M×N, bf16, row-major) from a (M×K fp8, row-major) and b (N×K e4m3,
// row-major): CUTLASS's TN GEMM with A row-major, B column-major (K-major, i.e. our N×K rows) and
// D row-major. The caller (gemm_cuda) has checked the shapes, alignments and pointers (see
// gemm_cuda.cu); a kernel function returns false only where CUTLASS itself refuses the problem
// (can_implement, workspace too small, initialize or launch failure). None throws.
#pragma once

#include <cstddef>

#include "cutlass_launch.h"
#include "ember/float8_gemm.h"

namespace ember::float8::gemm_impl {

// Scaled (tensorwise / rowwise) kernels: out = bf16(a_scale[m] * (b_scale[n] * acc) + bias[n]).
// p.recipe selects, at run time, whether a_scale / b_scale are one float (kTensorwise: a
// zero-stride broadcast of element 0) or vectors of M / N floats (kRowwise); bias may be null.
//   e4m3 × e4m3, FP8 fast accumulation, 128×128×128 pingpong, cluster 1×2: large M
size_t gemm_scaled_e4m3_fast_large_workspace_bytes(const GemmParams& p, int sm_count);
bool gemm_scaled_e4m3_fast_large(const GemmParams& p, const CutlassLaunch& launch);
//   e4m3 × e4m3, FP8 fast accumulation, 64×128×128 pingpong, cluster 1×1: small M (one wave)
size_t gemm_scaled_e4m3_fast_small_workspace_bytes(const GemmParams& p, int sm_count);
bool gemm_scaled_e4m3_fast_small(const GemmParams& p, const CutlassLaunch& launch);
//   e4m3 × e4m3, promoted accumulation, 128×128×128 cooperative, cluster 1×2
size_t gemm_scaled_e4m3_promoted_workspace_bytes(const GemmParams& p, int sm_count);
bool gemm_scaled_e4m3_promoted(const GemmParams& p, const CutlassLaunch& launch);
//   e5m2 × e4m3, promoted accumulation, 128×128×128 cooperative, cluster 1×2
size_t gemm_scaled_e5m2_promoted_workspace_bytes(const GemmParams& p, int sm_count);
bool gemm_scaled_e5m2_promoted(const GemmParams& p, const CutlassLaunch& launch);

// Blockwise kernels (e4m3 × e4m3, scales applied in the mainloop every 128 of K), out =
// bf16(acc + bias[n]); 128×128×128 cooperative, cluster 1×2.
//   kBlockwise: a 1×128 groups (M, ⌈K/128⌉), b 128×128 tiles (⌈N/128⌉, ⌈K/128⌉)
size_t gemm_blockwise_workspace_bytes(const GemmParams& p, int sm_count);
bool gemm_blockwise(const GemmParams& p, const CutlassLaunch& launch);
//   kBlockwiseWgrad: a 1×128 groups (M, ⌈K/128⌉), b 1×128 groups (N, ⌈K/128⌉)
size_t gemm_blockwise_wgrad_workspace_bytes(const GemmParams& p, int sm_count);
bool gemm_blockwise_wgrad(const GemmParams& p, const CutlassLaunch& launch);

}  // namespace ember::float8::gemm_impl
