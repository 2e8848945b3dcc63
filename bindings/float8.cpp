// float8 family: argument checks, params, and the CPU registrations.
#include "float8.h"

#include <torch/library.h>

#include "../csrc/scalar_type.h"

namespace ember::bindings {
namespace {

float8::Granularity parse_granularity(const std::string& g) {
  if (g == "tensor") return float8::Granularity::kTensor;
  if (g == "row") return float8::Granularity::kRow;
  if (g == "block") return float8::Granularity::kBlock;
  if (g == "tile") return float8::Granularity::kTile;
  TORCH_CHECK(false, "ember.quantize_fp8: granularity must be \"tensor\", \"row\", \"block\" or \"tile\", got \"", g, "\"");
}

}  // namespace

QuantizeCall prepare_quantize_fp8(const at::Tensor& x, at::ScalarType dtype, const std::string& granularity,
                                  int64_t block, bool transpose) {
  float8::QuantizeParams p;
  p.x_type = scalar_type_of(x, "ember.quantize_fp8", "x");
  TORCH_CHECK(dtype == at::kFloat8_e4m3fn || dtype == at::kFloat8_e5m2,
              "ember.quantize_fp8: dtype must be torch.float8_e4m3fn or torch.float8_e5m2, got ", dtype);
  p.format = dtype == at::kFloat8_e4m3fn ? fp8::Format::kE4M3 : fp8::Format::kE5M2;
  p.granularity = parse_granularity(granularity);
  const bool whole_tensor = p.granularity == float8::Granularity::kTensor && !transpose;
  TORCH_CHECK(whole_tensor || x.dim() == 2, "ember.quantize_fp8: x must be 2-D for granularity=\"", granularity,
              "\"", transpose ? " and transpose=True" : "", ", got shape ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), "ember.quantize_fp8: x must be contiguous (row-major), got shape ", x.sizes(),
              " with strides ", x.strides(), "; for a transposed view xt = x.t() pass x with transpose=True");
  const bool blocked = p.granularity == float8::Granularity::kBlock || p.granularity == float8::Granularity::kTile;
  // Range first: the int cast of 2^32 + 16 would be 16, silently taken for a supported block.
  const bool block_ok = block >= 16 && block <= 128 && float8::supported_block(static_cast<int>(block));
  TORCH_CHECK(!blocked || block_ok,
              "ember.quantize_fp8: block must be 16, 32, 64 or 128 for granularity=\"", granularity, "\", got ", block);
  p.block = blocked ? static_cast<int>(block) : 128;
  p.transpose = transpose;
  p.x_cols = x.dim() == 0 ? 1 : x.size(-1);
  p.x_rows = p.x_cols == 0 ? 0 : x.numel() / p.x_cols;
  if (x.dim() == 2) p.x_rows = x.size(0);

  QuantizeCall call;
  const auto q_shape = transpose ? std::vector<int64_t>{x.size(1), x.size(0)} : x.sizes().vec();
  call.q = at::empty(q_shape, x.options().dtype(dtype));
  std::vector<int64_t> scale_shape;
  if (p.granularity != float8::Granularity::kTensor) scale_shape = {p.scale_rows(), p.scale_cols()};
  call.scale = at::empty(scale_shape, x.options().dtype(at::kFloat));
  call.workspace = at::empty({p.workspace_floats()}, x.options().dtype(at::kFloat));
  p.x = x.data_ptr();
  p.q = static_cast<uint8_t*>(call.q.data_ptr());
  p.scale = call.scale.data_ptr<float>();
  p.workspace = call.workspace.data_ptr<float>();
  call.params = p;
  return call;
}

namespace {

std::tuple<at::Tensor, at::Tensor> quantize_fp8_cpu(const at::Tensor& x, at::ScalarType dtype,
                                                    c10::string_view granularity, int64_t block, bool transpose) {
  auto call = prepare_quantize_fp8(x, dtype, std::string(granularity), block, transpose);
  float8::quantize_cpu(call.params);
  return {call.q, call.scale};
}

}  // namespace

TORCH_LIBRARY_IMPL(ember, CPU, m) { m.impl("quantize_fp8", &quantize_fp8_cpu); }

// Quantization is not differentiable: its outputs never require grad (Float8Linear's autograd
// function decides what flows back).
TORCH_LIBRARY_IMPL(ember, Autograd, m) { m.impl("quantize_fp8", torch::CppFunction::makeFallthrough()); }

}  // namespace ember::bindings
