// Softmax-gradient GEMM kernel: dW += Gᵀ·h with G made from the logits in registers
// (softmax_grad_kernels.cuh).
#include "softmax_grad_kernels.cuh"

namespace ember::ce::softmax_grad_impl {

bool softmax_grad_dw(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch) {
  return run_config<SoftmaxGradGemm<true>>(p, launch);
}

}  // namespace ember::ce::softmax_grad_impl
