// apollo family: argument checks (see apollo_checks.h).
#include "apollo_checks.h"

#include <cmath>
#include <limits>

namespace ember::bindings {
namespace {

constexpr const char* kStep = "ember.apollo_step_";

void check_state(const at::Tensor& t, const char* name, size_t i, const at::Tensor& w, int64_t long_dim, int64_t rank) {
  TORCH_CHECK(t.device() == w.device(), kStep, ": ", name, "[", i, "] must be on ", w.device(), " like params[", i,
              "], got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, kStep, ": ", name, "[", i, "] must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == long_dim && t.size(1) == rank, kStep, ": ", name, "[", i,
              "] must have shape (", long_dim, ", ", rank, ") for params[", i, "] of shape ", w.sizes(), " at rank ",
              rank, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), kStep, ": ", name, "[", i, "] must be contiguous");
}

}  // namespace

apollo::Hyper check_apollo_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avg,
                                at::TensorList exp_avg_sq, at::TensorList norm_prev, at::IntArrayRef steps,
                                at::IntArrayRef streams, double lr, double beta1, double beta2, double eps,
                                double weight_decay, double scale, bool tensor_scale, double norm_growth_limit,
                                int64_t rank, int64_t update_proj_gap, int64_t seed, bool stochastic_rounding) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avg.size() == n && exp_avg_sq.size() == n && norm_prev.size() == n &&
                  steps.size() == n && streams.size() == n,
              kStep,
              ": params, grads, exp_avg, exp_avg_sq, norm_prev, steps and streams must have one entry per "
              "matrix, got ",
              n, ", ", grads.size(), ", ", exp_avg.size(), ", ", exp_avg_sq.size(), ", ", norm_prev.size(), ", ",
              steps.size(), ", ", streams.size());
  TORCH_CHECK(rank >= 1, kStep, ": rank must be >= 1, got ", rank);
  TORCH_CHECK(update_proj_gap >= 1, kStep, ": update_proj_gap must be >= 1, got ", update_proj_gap);
  // Finite too: an inf lr, weight_decay, scale or norm_growth_limit turns the weights into inf or NaN,
  // an inf eps stops every update.
  TORCH_CHECK(lr >= 0 && std::isfinite(lr), kStep, ": lr must be finite and >= 0, got ", lr);
  TORCH_CHECK(beta1 >= 0 && beta1 < 1, kStep, ": beta1 must be in [0, 1), got ", beta1);
  TORCH_CHECK(beta2 >= 0 && beta2 < 1, kStep, ": beta2 must be in [0, 1), got ", beta2);
  TORCH_CHECK(eps > 0 && std::isfinite(eps), kStep, ": eps must be finite and > 0, got ", eps);
  TORCH_CHECK(weight_decay >= 0 && std::isfinite(weight_decay), kStep, ": weight_decay must be finite and >= 0, got ",
              weight_decay);
  TORCH_CHECK(scale > 0 && std::isfinite(scale), kStep, ": scale must be finite and > 0, got ", scale);
  TORCH_CHECK(norm_growth_limit >= 1 && std::isfinite(norm_growth_limit), kStep,
              ": norm_growth_limit must be finite and >= 1, got ", norm_growth_limit);
  TORCH_CHECK(seed >= 0, kStep, ": seed must be >= 0, got ", seed);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& w = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(w.dim() == 2, kStep, ": params[", i, "] must be 2-D, got shape ", w.sizes());
    TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16, kStep, ": params[", i,
                "] must be float32 or bfloat16, got ", w.scalar_type());
    TORCH_CHECK(w.is_contiguous(), kStep, ": params[", i, "] must be contiguous");
    TORCH_CHECK(w.device() == params[0].device(), kStep, ": params[", i, "] is on ", w.device(), ", params[0] on ",
                params[0].device(), "; one call takes one device");
    TORCH_CHECK(w.device().is_cpu() || w.device().is_cuda(), kStep, ": params[", i, "] must be on CPU or CUDA, got ",
                w.device());
    TORCH_CHECK(g.layout() == at::kStrided, kStep, ": grads[", i, "] must be dense, got ", g.layout());
    TORCH_CHECK(g.sizes() == w.sizes() && g.scalar_type() == w.scalar_type() && g.device() == w.device(), kStep,
                ": grads[", i, "] must match params[", i, "] (", w.sizes(), ", ", w.scalar_type(), ", ", w.device(),
                "), got ", g.sizes(), ", ", g.scalar_type(), ", ", g.device());
    TORCH_CHECK(g.is_contiguous(), kStep, ": grads[", i, "] must be contiguous");
    TORCH_CHECK(!g.is_same(w), kStep, ": grads[", i, "] must not be params[", i, "] itself");
    const int64_t long_dim = std::max(w.size(0), w.size(1));
    check_state(exp_avg[i], "exp_avg", i, w, long_dim, rank);
    check_state(exp_avg_sq[i], "exp_avg_sq", i, w, long_dim, rank);
    const at::Tensor& np = norm_prev[i];
    TORCH_CHECK(np.device() == w.device() && np.scalar_type() == at::kFloat && np.numel() == 1, kStep, ": norm_prev[",
                i, "] must be a one-element float32 tensor on ", w.device(), ", got ", np.sizes(), " ",
                np.scalar_type(), " on ", np.device());
    TORCH_CHECK(steps[i] >= 1, kStep, ": steps[", i, "] must be >= 1 (the step being taken), got ", steps[i]);
    TORCH_CHECK(streams[i] >= 0 && streams[i] <= std::numeric_limits<uint32_t>::max(), kStep, ": streams[", i,
                "] must be in [0, 2^32), got ", streams[i]);
    TORCH_CHECK(w.numel() / 4 < (int64_t{1} << 32), kStep, ": params[", i, "] has too many elements (", w.numel(), ")");
  }
  apollo::Hyper h;
  h.beta1 = static_cast<float>(beta1);
  h.beta2 = static_cast<float>(beta2);
  h.eps = static_cast<float>(eps);
  h.norm_growth_limit = static_cast<float>(norm_growth_limit);
  h.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  h.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  h.lr_wd = static_cast<float>(lr * weight_decay);
  h.lr = lr;
  h.beta1_exact = beta1;
  h.beta2_exact = beta2;
  h.scale = scale;
  h.weight_decay = weight_decay;
  h.tensor_scale = tensor_scale;
  h.rank = rank;
  h.update_proj_gap = update_proj_gap;
  h.seed = static_cast<uint64_t>(seed);
  h.stochastic_rounding = stochastic_rounding;
  return h;
}

void check_apollo_projection(const at::Tensor& out, int64_t seed, int64_t stream, int64_t refresh) {
  constexpr const char* kOp = "ember.apollo_projection_";
  TORCH_CHECK(out.dim() == 2, kOp, ": out must be 2-D (rank, dim), got shape ", out.sizes());
  TORCH_CHECK(out.scalar_type() == at::kFloat || (out.is_cuda() && out.scalar_type() == at::kBFloat16), kOp,
              ": out must be float32 (or bfloat16 on CUDA), got ", out.scalar_type(), " on ", out.device());
  TORCH_CHECK(out.is_contiguous(), kOp, ": out must be contiguous");
  TORCH_CHECK(out.numel() / 4 < (int64_t{1} << 32), kOp, ": out has too many elements (", out.numel(), ")");
  TORCH_CHECK(seed >= 0, kOp, ": seed must be >= 0, got ", seed);
  TORCH_CHECK(stream >= 0 && stream <= std::numeric_limits<uint32_t>::max(), kOp, ": stream must be in [0, 2^32), got ",
              stream);
  TORCH_CHECK(refresh >= 0 && refresh <= std::numeric_limits<uint32_t>::max(), kOp,
              ": refresh must be in [0, 2^32), got ", refresh);
}

}  // namespace ember::bindings
