// The float8 driver (see float8_driver.h). In the emulation fp8 values are exact in fp32 and each
// is multiplied by its scale once, so the only rounding beyond that is the fp32 GEMM's own.
#include "float8_driver.h"

#include <vector>

#include "strict_mode.h"

namespace ember::float8 {
namespace {

// out (M × N, any float dtype, contiguous) = (a·a_scale)(b·b_scale)ᵀ + bias; bias: (N) fp32 or
// undefined.
void gemm_emulated(const GemmParams& p, const at::Tensor& out, const at::Tensor& bias, const Kernels& k) {
  const auto f32 = out.options().dtype(at::kFloat);
  at::Tensor a = at::empty({p.m, p.k}, f32), b = at::empty({p.n, p.k}, f32);
  k.dequantize({p.a, p.a_format, p.m, p.k, p.a_scale, p.a_groups(), a.data_ptr<float>()}, k.stream);
  k.dequantize({p.b, p.b_format, p.n, p.k, p.b_scale, p.b_groups(), b.data_ptr<float>()}, k.stream);
  if (out.scalar_type() == at::kFloat) {
    bias.defined() ? at::addmm_out(const_cast<at::Tensor&>(out), bias, a, b.t())
                   : at::mm_out(const_cast<at::Tensor&>(out), a, b.t());
  } else {
    out.copy_(bias.defined() ? at::addmm(bias, a, b.t()) : at::mm(a, b.t()));
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> quantize(const at::Tensor& x, at::ScalarType dtype, QuantizeParams p,
                                            const Kernels& k) {
  const auto q_shape = p.transpose ? std::vector<int64_t>{x.size(1), x.size(0)} : x.sizes().vec();
  at::Tensor q = at::empty(q_shape, x.options().dtype(dtype));
  std::vector<int64_t> scale_shape;
  if (p.granularity != Granularity::kTensor) scale_shape = {p.scale_rows(), p.scale_cols()};
  at::Tensor scale = at::empty(scale_shape, x.options().dtype(at::kFloat));
  const at::Tensor workspace = at::empty({p.workspace_floats()}, x.options().dtype(at::kFloat));
  p.x = x.data_ptr();
  p.q = static_cast<uint8_t*>(q.data_ptr());
  p.scale = scale.data_ptr<float>();
  p.workspace = workspace.data_ptr<float>();
  k.quantize(p, k.stream);
  return {q, scale};
}

at::Tensor gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b, const at::Tensor& b_scale,
                at::ScalarType out_dtype, const std::optional<at::Tensor>& bias, GemmParams p, const Kernels& k) {
  at::Tensor bias_f32;
  if (bias) {
    bias_f32 = bias->to(at::kFloat).contiguous();
    p.bias = bias_f32.data_ptr<float>();
  }
  at::Tensor out = at::empty({p.m, p.n}, a.options().dtype(out_dtype));
  p.a = static_cast<const uint8_t*>(a.data_ptr());
  p.b = static_cast<const uint8_t*>(b.data_ptr());
  p.a_scale = a_scale.data_ptr<float>();
  p.b_scale = b_scale.data_ptr<float>();
  p.out = out.data_ptr();
  // (an empty a or b may have a null data pointer, which the alignment check would refuse)
  if (k.gemm != nullptr && p.m > 0 && p.n > 0 && p.k > 0 && gemm_cuda_has_kernel(p)) {
    for (const auto& [t, arg] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
      TORCH_CHECK(aligned16(t->data_ptr()), "ember.fp8_gemm: ", arg,
                  " must start at a 16-byte aligned address (TMA), got a view at storage offset ", t->storage_offset());
    const auto workspace = at::empty({k.gemm_workspace_bytes(p)}, a.options().dtype(at::kByte));
    if (k.gemm(p, workspace.data_ptr(), k.stream)) return out;
    check_not_strict("EMBER_FP8_GEMM_STRICT", "ember.fp8_gemm", "the CUTLASS kernel refused M=", p.m, ", N=", p.n,
                     ", K=", p.k);
  }
  gemm_emulated(p, out, bias_f32, k);
  return out;
}

}  // namespace ember::float8
