// cross_entropy family: argument checks (see cross_entropy_checks.h).
#include "cross_entropy_checks.h"

namespace ember::bindings {

void check_rows_tensor(const char* op, const char* name, const at::Tensor& t, int64_t rows, at::Device device) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == rows, op, ": ", name, " must have shape (", rows, "), got ", t.sizes());
  TORCH_CHECK(t.device() == device, op, ": ", name, " must be on ", device, ", got ", t.device());
}

ce::Options check_ce(const char* op, const at::Tensor& target, const std::optional<at::Tensor>& weight, int64_t rows,
                     int64_t vocab, at::Device device, int64_t ignore_index, double label_smoothing, double z_loss,
                     double softcap) {
  check_rows_tensor(op, "target", target, rows, device);
  TORCH_CHECK(target.scalar_type() == at::kLong, op, ": target must be int64, got ", target.scalar_type());
  TORCH_CHECK(target.is_contiguous(), op, ": target must be contiguous");
  if (weight.has_value()) {
    check_rows_tensor(op, "weight", *weight, rows, device);
    TORCH_CHECK(weight->scalar_type() == at::kFloat && weight->is_contiguous(), op,
                ": weight must be a contiguous float32 tensor, got ", weight->scalar_type());
  }
  TORCH_CHECK(label_smoothing >= 0 && label_smoothing <= 1, op, ": label_smoothing must be in [0, 1], got ",
              label_smoothing);
  TORCH_CHECK(z_loss >= 0, op, ": z_loss must be >= 0, got ", z_loss);
  TORCH_CHECK(softcap >= 0, op, ": softcap must be > 0 (or None), got ", softcap);
  TORCH_CHECK(vocab >= 1, op, ": the number of classes must be >= 1, got ", vocab);
  if (rows > 0) {  // a target outside [0, V) would read out of bounds (one host sync on CUDA)
    const at::Tensor bad = (target != ignore_index) & ((target < 0) | (target >= vocab));
    TORCH_CHECK(!bad.any().item<bool>(), op, ": target values must be in [0, ", vocab, ") or ignore_index (",
                ignore_index, "); found ", bad.sum().item<int64_t>(), " outside");
  }
  ce::Options o;
  o.ignore_index = ignore_index;
  o.label_smoothing = static_cast<float>(label_smoothing);
  o.z_loss = static_cast<float>(z_loss);
  o.softcap = static_cast<float>(softcap);
  return o;
}

void check_logits(const char* op, const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 2, op, ": logits must be 2-D (N, V), got shape ", logits.sizes());
  TORCH_CHECK(
      logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kBFloat16 || logits.scalar_type() == at::kHalf,
      op, ": logits must be float32, bfloat16 or float16, got ", logits.scalar_type());
  TORCH_CHECK(logits.size(1) <= 1 || logits.stride(1) == 1, op,
              ": logits rows must be contiguous (stride 1 along V), got strides ", logits.strides());
}

void check_linear(const char* op, const at::Tensor& hidden, const at::Tensor& lm_weight,
                  const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(hidden.dim() == 2, op, ": hidden must be 2-D (N, d), got shape ", hidden.sizes());
  TORCH_CHECK(lm_weight.dim() == 2 && lm_weight.size(1) == hidden.size(1), op, ": lm_weight must be (V, ",
              hidden.size(1), "), got ", lm_weight.sizes());
  TORCH_CHECK(hidden.scalar_type() == lm_weight.scalar_type(), op, ": hidden and lm_weight must have one dtype, got ",
              hidden.scalar_type(), " and ", lm_weight.scalar_type());
  TORCH_CHECK(
      hidden.scalar_type() == at::kFloat || hidden.scalar_type() == at::kBFloat16 || hidden.scalar_type() == at::kHalf,
      op, ": hidden must be float32, bfloat16 or float16, got ", hidden.scalar_type());
  TORCH_CHECK(lm_weight.device() == hidden.device(), op, ": lm_weight must be on ", hidden.device(), ", got ",
              lm_weight.device());
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == lm_weight.size(0) && bias->device() == hidden.device() &&
                    bias->scalar_type() == hidden.scalar_type(),
                op, ": bias must be (", lm_weight.size(0), ") of ", hidden.scalar_type(), " on ", hidden.device(),
                ", got ", bias->sizes(), " ", bias->scalar_type(), " on ", bias->device());
  }
}

void check_backward(const char* op, const at::Tensor& grad_loss, const at::Tensor& lse, int64_t rows,
                    at::Device device) {
  TORCH_CHECK(grad_loss.scalar_type() == at::kFloat, op, ": grad_loss must be float32, got ", grad_loss.scalar_type());
  TORCH_CHECK(lse.scalar_type() == at::kDouble, op, ": lse must be float64 (the forward's), got ", lse.scalar_type());
  check_rows_tensor(op, "grad_loss", grad_loss, rows, device);
  check_rows_tensor(op, "lse", lse, rows, device);
  TORCH_CHECK(lse.is_contiguous(), op, ": lse must be contiguous");
}

}  // namespace ember::bindings
