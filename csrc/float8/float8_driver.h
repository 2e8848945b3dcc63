// The float8 ops over ATen tensors: allocate the outputs, fill the params' pointers and run the
// device's kernels; fp8_gemm runs the CUTLASS kernel where one covers the problem, else the exact
// emulation (dequantize both operands with their scales, one fp32 GEMM through ATen: the CPU BLAS,
// or cuBLAS, which follows torch's TF32 setting). Device-generic: the caller passes the device's
// kernel table (bindings/float8_cpu.cpp, float8_cuda.cpp). Uses ATen, so it is not part of
// include/ember/.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "ember/float8.h"
#include "ember/float8_gemm.h"

namespace ember::float8 {

// One device's kernels (include/ember/float8*.h) and the stream they run on. gemm is null on the
// CPU, which always emulates.
struct Kernels {
  void (*quantize)(const QuantizeParams&, void*);
  void (*dequantize)(const DequantizeParams&, void*);
  bool (*gemm)(const GemmParams&, void*, void*);  // (params, workspace, stream)
  int64_t (*gemm_workspace_bytes)(const GemmParams&);
  void* stream = nullptr;
};

// x as checked into p (bindings/float8_checks.cpp; pointers unset) -> (q, scale).
std::tuple<at::Tensor, at::Tensor> quantize(const at::Tensor& x, at::ScalarType dtype, QuantizeParams p,
                                            const Kernels& k);

// out (M × N, out_dtype) = (a·a_scale)(b·b_scale)ᵀ + bias, for the checked p (pointers unset).
// EMBER_FP8_GEMM_STRICT=1 makes a kernel that refuses its problem an error instead of a fallback
// (the CUDA tests set it, so a dead kernel cannot hide behind the slow path).
at::Tensor gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b, const at::Tensor& b_scale,
                at::ScalarType out_dtype, const std::optional<at::Tensor>& bias, GemmParams p, const Kernels& k);

}  // namespace ember::float8
