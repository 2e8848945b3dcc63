// float8 family: CUDA registrations (same checks and params as the CPU path, see float8.h).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

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

}  // namespace

TORCH_LIBRARY_IMPL(ember, CUDA, m) { m.impl("quantize_fp8", &quantize_fp8_cuda); }

}  // namespace ember::bindings
