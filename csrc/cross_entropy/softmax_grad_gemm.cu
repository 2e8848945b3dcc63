// softmax_grad_gemm_cuda (include/ember/cross_entropy_softmax_grad.h): checks a softmax-gradient GEMM against what the
// CUTLASS sm90a kernels (softmax_grad_{dh,dw}.cu) can run and runs it. No CUTLASS here, so this
// file compiles in seconds.
//
// Checked before any kernel (a TMA descriptor the kernel cannot build is not reported): bf16
// operands;
// compute capability 9.0 (the code is sm_90a only); 0 < rows, vocab, dim ≤ INT_MAX (CUTLASS's
// int problem shape); vocab % 8 == 0 and dim % 8 == 0 (16-byte TMA rows of Z, W, h, dh, dW;
// the side tensor's rows are whole groups of 16 bytes, 4·ceil(vocab / side_block) words); logits, side, operand and
// result non-null and 16-byte aligned; the workspace holds at least what softmax_grad_gemm_cuda_workspace_bytes asked
// for (dh's stream-K reduction). Otherwise false, nothing launched, and the caller materializes the gradient instead.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cutlass_launch.h"
#include "ember/cross_entropy_softmax_grad.h"
#include "softmax_grad_kernels.h"

namespace ember::ce {
namespace {

// p's shape and dtype are what the kernels take (pointers aside).
bool shape_ok(const SoftmaxGradGemmParams& p) {
  if (p.type != ScalarType::kBFloat16) return false;
  if (p.rows <= 0 || p.vocab <= 0 || p.dim <= 0 || p.rows > INT_MAX || p.vocab > INT_MAX || p.dim > INT_MAX)
    return false;
  const int64_t groups = (p.vocab + side_block(p.kind) - 1) / side_block(p.kind);
  return p.vocab % 8 == 0 && p.dim % 8 == 0 && p.side_words == 4 * groups && p.side_words <= INT_MAX;
}

}  // namespace

int64_t softmax_grad_gemm_cuda_workspace_bytes(const SoftmaxGradGemmParams& p) {
  if (p.kind != SoftmaxGradKind::kDhidden || !shape_ok(p)) return 0;
  const CutlassLaunch launch = current_device_launch(nullptr);
  if (!launch.sm90) return 0;
  return softmax_grad_impl::softmax_grad_dh_workspace_bytes(p, launch);
}

bool softmax_grad_gemm_cuda(const SoftmaxGradGemmParams& p, void* workspace, void* stream) {
  if (!shape_ok(p)) return false;
  if (!aligned16(p.logits) || !aligned16(p.side) || !aligned16(p.operand) || !aligned16(p.result)) return false;
  CutlassLaunch launch = current_device_launch(stream);
  if (!launch.sm90) return false;
  launch.workspace = workspace;
  launch.workspace_bytes = size_t(softmax_grad_gemm_cuda_workspace_bytes(p));  // the caller allocated this much
  switch (p.kind) {
    case SoftmaxGradKind::kDhidden: return softmax_grad_impl::softmax_grad_dh(p, launch);
    case SoftmaxGradKind::kDweight: return softmax_grad_impl::softmax_grad_dw(p, launch);
    default: return false;
  }
}

}  // namespace ember::ce
