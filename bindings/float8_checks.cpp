// float8 family: argument checks (see float8_checks.h).
#include "float8_checks.h"

#include <sstream>
#include <vector>

#include "scalar_type.h"

namespace ember::bindings {
namespace {

float8::Granularity parse_granularity(const std::string& g) {
  if (g == "tensor") return float8::Granularity::kTensor;
  if (g == "row") return float8::Granularity::kRow;
  if (g == "block") return float8::Granularity::kBlock;
  if (g == "tile") return float8::Granularity::kTile;
  TORCH_CHECK(false, "ember.quantize_fp8: granularity must be \"tensor\", \"row\", \"block\" or \"tile\", got \"", g,
              "\"");
}

constexpr const char* kOp = "ember.fp8_gemm";

fp8::Format fp8_format(const at::Tensor& t, const char* arg) {
  TORCH_CHECK(t.scalar_type() == at::kFloat8_e4m3fn || t.scalar_type() == at::kFloat8_e5m2, kOp, ": ", arg,
              " must be torch.float8_e4m3fn or torch.float8_e5m2, got ", t.scalar_type());
  return t.scalar_type() == at::kFloat8_e4m3fn ? fp8::Format::kE4M3 : fp8::Format::kE5M2;
}

void check_operand(const at::Tensor& t, const char* arg) {
  TORCH_CHECK(t.dim() == 2, kOp, ": ", arg, " must be 2-D, got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), kOp, ": ", arg,
              " must be row-major contiguous (b is N×K: pass w, not w.t()), got shape ", t.sizes(), " with strides ",
              t.strides());
}

bool shape_is(const at::Tensor& t, std::initializer_list<int64_t> shape) {
  return t.sizes().vec() == std::vector<int64_t>(shape);
}

float8::GemmRecipe recipe_of(const at::Tensor& a_scale, const at::Tensor& b_scale, int64_t m, int64_t n, int64_t k) {
  const int64_t kb = ceil_div(k, float8::kGemmBlock), nb = ceil_div(n, float8::kGemmBlock);
  if (a_scale.dim() == 0 && b_scale.dim() == 0) return float8::GemmRecipe::kTensorwise;
  if (shape_is(a_scale, {m, 1}) && shape_is(b_scale, {n, 1})) return float8::GemmRecipe::kRowwise;
  if (shape_is(a_scale, {m, kb}) && shape_is(b_scale, {nb, kb})) return float8::GemmRecipe::kBlockwise;
  if (shape_is(a_scale, {m, kb}) && shape_is(b_scale, {n, kb})) return float8::GemmRecipe::kBlockwiseWgrad;
  std::ostringstream msg;
  msg << kOp << ": the scale shapes a_scale " << a_scale.sizes() << " and b_scale " << b_scale.sizes()
      << " match no recipe for M=" << m << ", N=" << n << ", K=" << k << "; expected () and () (tensorwise), (" << m
      << ", 1) and (" << n << ", 1) (rowwise), (" << m << ", " << kb << ") and (" << nb << ", " << kb
      << ") (blockwise 1x128 x 128x128), or (" << m << ", " << kb << ") and (" << n << ", " << kb
      << ") (blockwise 1x128 x 1x128)";
  TORCH_CHECK(false, msg.str());
}

float8::OutType out_type_of(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return float8::OutType::kBFloat16;
    case at::kHalf: return float8::OutType::kFloat16;
    case at::kFloat: return float8::OutType::kFloat32;
    default: TORCH_CHECK(false, kOp, ": out_dtype must be torch.bfloat16, torch.float16 or torch.float32, got ", t);
  }
}

}  // namespace

float8::QuantizeParams check_quantize_fp8(const at::Tensor& x, at::ScalarType dtype, const std::string& granularity,
                                          int64_t block, bool transpose) {
  float8::QuantizeParams p;
  p.x_type = scalar_type_of(x, "ember.quantize_fp8", "x");
  TORCH_CHECK(dtype == at::kFloat8_e4m3fn || dtype == at::kFloat8_e5m2,
              "ember.quantize_fp8: dtype must be torch.float8_e4m3fn or torch.float8_e5m2, got ", dtype);
  p.format = dtype == at::kFloat8_e4m3fn ? fp8::Format::kE4M3 : fp8::Format::kE5M2;
  p.granularity = parse_granularity(granularity);
  const bool whole_tensor = p.granularity == float8::Granularity::kTensor && !transpose;
  TORCH_CHECK(whole_tensor || x.dim() == 2, "ember.quantize_fp8: x must be 2-D for granularity=\"", granularity, "\"",
              transpose ? " and transpose=True" : "", ", got shape ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), "ember.quantize_fp8: x must be contiguous (row-major), got shape ", x.sizes(),
              " with strides ", x.strides(), "; for a transposed view xt = x.t() pass x with transpose=True");
  const bool blocked = p.granularity == float8::Granularity::kBlock || p.granularity == float8::Granularity::kTile;
  // Range first: the int cast of 2^32 + 16 would be 16, silently taken for a supported block.
  const bool block_ok = block >= 16 && block <= 128 && float8::supported_block(static_cast<int>(block));
  TORCH_CHECK(!blocked || block_ok, "ember.quantize_fp8: block must be 16, 32, 64 or 128 for granularity=\"",
              granularity, "\", got ", block);
  p.block = blocked ? static_cast<int>(block) : 128;
  p.transpose = transpose;
  p.x_cols = x.dim() == 0 ? 1 : x.size(-1);
  p.x_rows = p.x_cols == 0 ? 0 : x.numel() / p.x_cols;
  if (x.dim() == 2) p.x_rows = x.size(0);
  return p;
}

float8::GemmParams check_fp8_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b,
                                  const at::Tensor& b_scale, at::ScalarType out_dtype,
                                  const std::optional<at::Tensor>& bias, bool fast_accum) {
  float8::GemmParams p;
  p.a_format = fp8_format(a, "a");
  p.b_format = fp8_format(b, "b");
  TORCH_CHECK(
      p.a_format == fp8::Format::kE4M3 || p.b_format == fp8::Format::kE4M3, kOp,
      ": a and b cannot both be float8_e5m2 (the fp8 tensor cores take e4m3 x e4m3, e4m3 x e5m2 and e5m2 x e4m3)");
  check_operand(a, "a");
  check_operand(b, "b");
  TORCH_CHECK(a.size(1) == b.size(1), kOp, ": a is (M, K) and b is (N, K) with the same K, got a ", a.sizes(),
              " and b ", b.sizes());
  p.m = a.size(0);
  p.n = b.size(0);
  p.k = a.size(1);
  TORCH_CHECK(p.k % float8::kGemmAlign == 0, kOp, ": K (a.shape[1]) must be a multiple of 16, got ", p.k);
  TORCH_CHECK(p.n % float8::kGemmAlign == 0, kOp, ": N (b.shape[0]) must be a multiple of 16, got ", p.n);
  const auto device = a.device();
  const auto same_device = [&](const at::Tensor& t, const char* arg) {
    TORCH_CHECK(t.device() == device, kOp, ": ", arg, " must be on a's device ", device, ", got ", t.device());
  };
  same_device(b, "b");
  for (const auto& [t, arg] : {std::pair{&a_scale, "a_scale"}, std::pair{&b_scale, "b_scale"}}) {
    same_device(*t, arg);
    TORCH_CHECK(t->scalar_type() == at::kFloat, kOp, ": ", arg, " must be float32, got ", t->scalar_type());
    TORCH_CHECK(t->is_contiguous(), kOp, ": ", arg, " must be contiguous, got strides ", t->strides());
  }
  p.recipe = recipe_of(a_scale, b_scale, p.m, p.n, p.k);
  p.out_type = out_type_of(out_dtype);
  p.fast_accum = fast_accum && !p.blockwise();
  if (bias) {
    same_device(*bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == p.n, kOp, ": bias must have shape (N,) = (", p.n, ",), got ",
                bias->sizes());
    const auto bt = bias->scalar_type();
    TORCH_CHECK(bt == at::kFloat || bt == at::kHalf || bt == at::kBFloat16, kOp,
                ": bias must be float32, float16 or bfloat16, got ", bias->scalar_type());
  }
  return p;
}

}  // namespace ember::bindings
