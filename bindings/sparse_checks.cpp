// sparse family: argument checks (see sparse_checks.h).
#include "sparse_checks.h"

#include <vector>

#include "ember/sparse.h"

namespace ember::bindings {
namespace {

void check_block(const char* op, int64_t block) {
  TORCH_CHECK(block == 0 || sparse::supported_block(block), op,
              ": block must be 16, 32, 64 or 128 (or None for a bitmask), got ", block);
}

// The packed mask of a rows × cols weight, as `block` packs it; arg: the argument's name.
void check_packed(const char* op, const char* arg, const at::Tensor& packed, int64_t rows, int64_t cols,
                  int64_t block) {
  check_block(op, block);
  const auto want_dtype = block == 0 ? at::kInt : at::kByte;
  const std::vector<int64_t> want = block == 0 ? std::vector<int64_t>{rows, sparse::words_per_row(cols)}
                                               : std::vector<int64_t>{ceil_div(rows, block), ceil_div(cols, block)};
  TORCH_CHECK(packed.scalar_type() == want_dtype && packed.sizes() == at::IntArrayRef(want), op, ": ", arg,
              " must be the ", block == 0 ? "int32 bitmask" : "uint8 block mask", " of a ", rows, "×", cols,
              " weight (shape ", want, "), got ", packed.scalar_type(), " of shape ", packed.sizes(),
              "; make it with ember.ops.pack_mask");
}

void check_linear(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask,
                  int64_t block) {
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be 2-D (out, in), got shape ", weight.sizes());
  TORCH_CHECK(x.dim() == 2 && x.size(1) == weight.size(1), op, ": x must be (N, ", weight.size(1), "), got ",
              x.sizes());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type() && at::isFloatingType(x.scalar_type()), op,
              ": x and weight must have one floating dtype, got ", x.scalar_type(), " and ", weight.scalar_type());
  TORCH_CHECK(x.device() == weight.device() && mask.device() == weight.device(), op, ": x, weight and mask must be on ",
              weight.device(), ", got ", x.device(), ", ", weight.device(), ", ", mask.device());
  check_packed(op, "mask", mask, weight.size(0), weight.size(1), block);
}

}  // namespace

void check_pack_mask(const at::Tensor& mask, int64_t block) {
  constexpr const char* op = "ember.pack_mask";
  TORCH_CHECK(mask.dim() == 2 && mask.scalar_type() == at::kBool, op, ": mask must be a 2-D bool tensor, got ",
              mask.scalar_type(), " of shape ", mask.sizes());
  check_block(op, block);
}

void check_unpack_mask(const at::Tensor& packed, int64_t rows, int64_t cols, int64_t block) {
  TORCH_CHECK(rows >= 0 && cols >= 0, "ember.unpack_mask: rows and cols must be >= 0, got ", rows, " and ", cols);
  check_packed("ember.unpack_mask", "packed", packed, rows, cols, block);
}

void check_masked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                         const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "ember.masked_linear";
  check_linear(op, x, weight, mask, block);
  if (bias.has_value())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == weight.scalar_type() &&
                    bias->device() == weight.device(),
                op, ": bias must be (", weight.size(0), ") of ", weight.scalar_type(), " on ", weight.device());
}

void check_masked_linear_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                  const at::Tensor& mask, int64_t block) {
  constexpr const char* op = "ember.masked_linear_backward";
  check_linear(op, x, weight, mask, block);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) == weight.size(0) &&
                  grad.scalar_type() == x.scalar_type(),
              op, ": grad must be (", x.size(0), ", ", weight.size(0), ") of ", x.scalar_type(), ", got ", grad.sizes(),
              " ", grad.scalar_type());
}

}  // namespace ember::bindings
