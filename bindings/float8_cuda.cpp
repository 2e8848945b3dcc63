// float8 family: CUDA registrations (same checks and params as the CPU path, see float8.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "../csrc/float8/gemm_emulated.h"
#include "../csrc/strict_mode.h"
#include "float8.h"

namespace ember::bindings {
namespace {

std::tuple<at::Tensor, at::Tensor> quantize_fp8_cuda(const at::Tensor& x, at::ScalarType dtype,
                                                     c10::string_view granularity, int64_t block, bool transpose) {
  const c10::cuda::CUDAGuard guard(x.device());
  auto call = prepare_quantize_fp8(x, dtype, std::string(granularity), block, transpose);
  float8::quantize_cuda(call.params, at::cuda::getCurrentCUDAStream().stream());
  return {call.q, call.scale};
}

// The CUTLASS kernel where one covers the problem (float8_gemm.h: gemm_cuda_has_kernel), else
// the exact emulation (dequantize, then cuBLAS in fp32, which follows torch's TF32 setting).
// EMBER_FP8_GEMM_STRICT=1 makes a kernel that refuses its problem an error instead of a
// fallback (the CUDA tests set it, so a dead kernel cannot hide behind the slow path).
at::Tensor fp8_gemm_cuda(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b, const at::Tensor& b_scale,
                         at::ScalarType out_dtype, const std::optional<at::Tensor>& bias, bool fast_accum) {
  TORCH_CHECK(a.is_cuda(), "ember.fp8_gemm: a must be on the CUDA device the other arguments are on, got ", a.device());
  const c10::cuda::CUDAGuard guard(a.device());
  auto call = prepare_fp8_gemm(a, a_scale, b, b_scale, out_dtype, bias, fast_accum);
  const auto& p = call.params;
  void* stream = at::cuda::getCurrentCUDAStream().stream();
  if (p.m > 0 && p.k > 0 && float8::gemm_cuda_has_kernel(p)) {
    for (const auto& [t, arg] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
      TORCH_CHECK(reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0, "ember.fp8_gemm: ", arg,
                  " must start at a 16-byte aligned address (TMA), got a view at storage offset ", t->storage_offset());
    const auto workspace = at::empty({float8::gemm_cuda_workspace_bytes(p)}, a.options().dtype(at::kByte));
    if (float8::gemm_cuda(p, workspace.data_ptr(), stream)) return call.out;
    check_not_strict("EMBER_FP8_GEMM_STRICT", "ember.fp8_gemm", "the CUTLASS kernel refused M=", p.m, ", N=", p.n,
                     ", K=", p.k);
  }
  float8::gemm_emulated(p, call.out, call.bias, &float8::dequantize_cuda, stream);
  return call.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ember, CUDA, m) {
  m.impl("quantize_fp8", &quantize_fp8_cuda);
  m.impl("fp8_gemm", &fp8_gemm_cuda);
}

}  // namespace ember::bindings
