// softmax_grad_gemm_cpu (include/ember/cross_entropy_softmax_grad.h): the CUDA softmax-gradient GEMMs' arithmetic on
// the CPU, fp32, with the gradient G materialized: grad_logit per element, reading lse, scale and the target from the
// same side tensor the kernels read, then one BLAS GEMM. The driver uses it only when EMBER_CE_SOFTMAX_GEMM=1 (the
// tests), so the CPU checks what the CUDA path is given.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "ember/cross_entropy_softmax_grad.h"

namespace ember::ce {

int64_t softmax_grad_gemm_cpu_workspace_bytes(const SoftmaxGradGemmParams&) { return 0; }

bool softmax_grad_gemm_cpu(const SoftmaxGradGemmParams& p, void*, void*) {
  if (p.type != ScalarType::kFloat32 || p.rows <= 0 || p.vocab <= 0 || p.dim <= 0) return false;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor z = at::from_blob(const_cast<float*>(p.logits), {p.rows, p.vocab}, f32);
  at::Tensor g = at::empty({p.rows, p.vocab}, f32);
  const float* zp = z.data_ptr<float>();
  float* gp = g.data_ptr<float>();
  const int64_t block = side_block(p.kind);
  const auto* side = static_cast<const uint32_t*>(p.side);
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t v = 0; v < p.vocab; ++v) {
        const uint32_t* group = side + r * p.side_words + 4 * (v / block);
        gp[r * p.vocab + v] = grad_logit_from_side(p.opt, zp[r * p.vocab + v], group, v % block, p.vocab);
      }
    }
  });
  if (p.kind == SoftmaxGradKind::kDhidden) {
    const at::Tensor w = at::from_blob(const_cast<void*>(p.operand), {p.vocab, p.dim}, f32);
    at::Tensor dh = at::from_blob(p.result, {p.rows, p.dim}, f32);
    at::mm_out(dh, g, w);
  } else {
    const at::Tensor h = at::from_blob(const_cast<void*>(p.operand), {p.rows, p.dim}, f32);
    at::from_blob(p.result, {p.vocab, p.dim}, f32).addmm_(g.t(), h);
  }
  return true;
}

}  // namespace ember::ce
