// The exact-emulation fp8 GEMM: dequantize both operands into fp32 with their scales (the
// device's dequantize kernel) and run one fp32 GEMM through ATen (the CPU BLAS, or cuBLAS for the
// GPU combinations no CUTLASS kernel covers). Uses ATen, so it is not part of include/ember/.
#pragma once

#include <ATen/ATen.h>

#include "ember/float8_gemm.h"

namespace ember::float8 {

using DequantizeFn = void (*)(const DequantizeParams&, void*);

// out (M × N, any float dtype, contiguous) = (a·a_scale)(b·b_scale)ᵀ + bias; p's pointers live on
// out's device; bias: (N) fp32 or undefined.
void gemm_emulated(const GemmParams& p, const at::Tensor& out, const at::Tensor& bias, DequantizeFn dequantize,
                   void* stream);

}  // namespace ember::float8
