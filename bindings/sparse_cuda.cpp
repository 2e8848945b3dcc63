// sparse family: CUDA registrations (same checks as the CPU path, see sparse.h), with the CUDA
// bitmask apply, grouped-GEMM and bitmask-GEMM kernels on the current stream.
#include <ATen/cuda/CUDAContext.h>
#include <torch/library.h>

#include "sparse.h"

namespace ember::bindings {
namespace {

sparse::DeviceKernels cuda_kernel() {
  return {&sparse::apply_bitmask_cuda, &sparse::grouped_gemm_cuda, &sparse::grouped_gemm_workspace_bytes,
          &sparse::bitmask_gemm_cuda, at::cuda::getCurrentCUDAStream().stream()};
}

at::Tensor masked_linear_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                              const std::optional<at::Tensor>& bias) {
  const c10::DeviceGuard guard(x.device());  // before the stream is read
  return checked_masked_linear(x, weight, mask, block, bias, cuda_kernel());
}

std::tuple<at::Tensor, at::Tensor> masked_linear_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                               const at::Tensor& weight, const at::Tensor& mask,
                                                               int64_t block, bool need_x, bool need_w) {
  const c10::DeviceGuard guard(x.device());
  return checked_masked_linear_backward(grad, x, weight, mask, block, need_x, need_w, cuda_kernel());
}

}  // namespace

TORCH_LIBRARY_IMPL(ember, CUDA, m) {
  m.impl("pack_mask", &pack_mask);
  m.impl("unpack_mask", &unpack_mask);
  m.impl("masked_linear", &masked_linear_cuda);
  m.impl("masked_linear_backward", &masked_linear_backward_cuda);
}

}  // namespace ember::bindings
