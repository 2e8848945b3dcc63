// Softmax-gradient GEMM kernel: dh = G·W with G made from the logits in registers, stream-K
// over the vocabulary (softmax_grad_kernels.cuh).
#include "softmax_grad_kernels.cuh"

namespace ember::ce::softmax_grad_impl {

bool softmax_grad_dh(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch) {
  return run_config<SoftmaxGradGemm<false>>(p, launch);
}

int64_t softmax_grad_dh_workspace_bytes(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch) {
  return workspace_bytes<SoftmaxGradGemm<false>>(p, launch);
}

}  // namespace ember::ce::softmax_grad_impl
