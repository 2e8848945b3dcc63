// See gemm_emulated.h. fp8 values are exact in fp32 and each is multiplied by its scale once, so
// the only rounding beyond that is the fp32 GEMM's own.
#include "gemm_emulated.h"

namespace ember::float8 {

void gemm_emulated(const GemmParams& p, const at::Tensor& out, const at::Tensor& bias, DequantizeFn dequantize,
                   void* stream) {
  const auto f32 = out.options().dtype(at::kFloat);
  at::Tensor a = at::empty({p.m, p.k}, f32), b = at::empty({p.n, p.k}, f32);
  dequantize({p.a, p.a_format, p.m, p.k, p.a_scale, p.a_groups(), a.data_ptr<float>()}, stream);
  dequantize({p.b, p.b_format, p.n, p.k, p.b_scale, p.b_groups(), b.data_ptr<float>()}, stream);
  if (out.scalar_type() == at::kFloat) {
    bias.defined() ? at::addmm_out(const_cast<at::Tensor&>(out), bias, a, b.t()) : at::mm_out(const_cast<at::Tensor&>(out), a, b.t());
  } else {
    out.copy_(bias.defined() ? at::addmm(bias, a, b.t()) : at::mm(a, b.t()));
  }
}

}  // namespace ember::float8
