// apollo family: the kernels' torch-free API (parameter structs, launchers) and the update rule's
// arithmetic, shared by the CPU and CUDA kernels.
//
// The rule, for one m×n weight W with gradient G (the APOLLO paper's): project the shorter side. With
// L = max(m, n), S = min(m, n) and Gv = G (m ≥ n) or Gᵀ (m < n), an L×S view:
//   P = randn(r, S)/√r, regenerated from (seed, stream, refresh) and never stored
//   R = Gv·Pᵀ (L×r);  M = β1·M + (1−β1)·R;  V = β2·V + (1−β2)·R²;  R̃ = M/(√V + eps)
//   s_i = ‖R̃_i‖/(‖R_i‖ + 1e-8) per channel i < L (or one s over the tensor)
//   U = Gv·diag(s);  ‖U‖² = Σ_i s_i²·‖Gv_i‖², so the limiter needs no full-size temporary:
//   from the second step on, if ‖U‖ > γ·‖U_prev‖, U is scaled down to γ·‖U_prev‖
//   W −= lr·√(1−β2ᵗ)/(1−β1ᵗ)·√scale·U;  then W −= lr·wd·W
#pragma once

#include <cmath>
#include <cstdint>

#include "ember/common.h"
#include "ember/random.h"

namespace ember::apollo {

using random::add;
using random::div;
using random::mul;
using random::sqrt_rn;
using random::sub;

// Hyperparameters of one parameter group (one step call).
struct Hyper {
  // As the kernels use them (float):
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-6f, norm_growth_limit = 1.01f;
  // Rounded once from double on the host (1 − β2 in float would be off by 1e-5 relative).
  float one_minus_beta1 = 0.1f, one_minus_beta2 = 0.001f, lr_wd = 0.0f;
  // As given (double): only the host's step_size() reads them.
  double lr = 1e-2, beta1_exact = 0.9, beta2_exact = 0.999, scale = 1.0, weight_decay = 0.0;
  bool tensor_scale = false;        // one s for the whole matrix (APOLLO-Mini) instead of per channel
  bool stochastic_rounding = true;  // bf16 weights: round the updated value stochastically
  uint64_t seed = 0;
  int64_t rank = 256;
  int64_t update_proj_gap = 200;
};

// One projected matrix in one step. Pointers are on the kernel's device.
struct Matrix {
  void* w = nullptr;        // rows × cols, row-major contiguous, `type`
  const void* g = nullptr;  // same shape, type and layout as w
  ScalarType type = ScalarType::kFloat32;
  int64_t rows = 0, cols = 0;
  float* exp_avg = nullptr;     // L × rank, row-major (state)
  float* exp_avg_sq = nullptr;  // L × rank (state)
  float* norm_prev = nullptr;   // 1: ‖U‖ of the previous step after limiting (state)
  int64_t step = 1;             // this step, counted from 1
  uint32_t stream = 0;          // the parameter's index: keys its projection and rounding streams
  float step_size = 0.0f;       // step_size(h, step), from the host
  // Transients of this step (freed when it ends):
  const float* r = nullptr;  // L × rank: R = Gv·Pᵀ
  float* gsq = nullptr;      // L: ‖Gv_i‖²
  float* rt_sq = nullptr;    // L: ‖R̃_i‖², then s_i (after finalize)
  float* r_sq = nullptr;     // L: ‖R_i‖²
  float* coef = nullptr;     // 1: lr·bias correction·√scale / limiter (after finalize)

  EMBER_HOST_DEVICE bool transposed() const { return rows < cols; }  // channels are G's columns
  EMBER_HOST_DEVICE int64_t long_dim() const { return transposed() ? cols : rows; }
  EMBER_HOST_DEVICE int64_t short_dim() const { return transposed() ? rows : cols; }
  // Refresh count: P is drawn at step 1 and every update_proj_gap steps after.
  EMBER_HOST_DEVICE uint32_t refresh(int64_t gap) const { return static_cast<uint32_t>((step - 1) / gap); }
};

// ---- the projection ----------------------------------------------------------------------------
// P of one matrix for one refresh: rank × dim, row-major, written as `type` (fp32 or bf16).
struct Projection {
  void* out = nullptr;
  ScalarType type = ScalarType::kFloat32;
  int64_t rank = 0, dim = 0;
  uint64_t seed = 0;
  uint32_t stream = 0, refresh = 0;
};

// 1/√rank, computed once on the host so both devices scale by the same float.
inline float inv_sqrt_rank(int64_t rank) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(rank))); }

// Elements 4·group .. 4·group+3 of P (row-major rank × S) for the given refresh.
EMBER_HOST_DEVICE void projection4(uint64_t seed, uint32_t stream, uint32_t refresh, uint32_t group, float inv_sqrt_r,
                                   float (&p)[4]) {
  random::normal4(seed, random::Domain::kProjection, stream, refresh, group, p);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int k = 0; k < 4; ++k) p[k] = mul(p[k], inv_sqrt_r);
}

// ---- moments: one element of the L×r state -----------------------------------------------------
// Updates M and V in place; adds R̃² and R² to the channel's sums.
EMBER_HOST_DEVICE void moment_update(const Hyper& h, float r, float& m, float& v, float& rt_sq, float& r_sq) {
  m = add(mul(h.beta1, m), mul(h.one_minus_beta1, r));
  v = add(mul(h.beta2, v), mul(h.one_minus_beta2, mul(r, r)));
  const float rt = div(m, add(sqrt_rn(v), h.eps));
  rt_sq = add(rt_sq, mul(rt, rt));
  r_sq = add(r_sq, mul(r, r));
}

// s = ‖R̃‖/(‖R‖ + 1e-8), from the squared norms.
EMBER_HOST_DEVICE float scaling_factor(float rt_sq, float r_sq) {
  return div(sqrt_rn(rt_sq), add(sqrt_rn(r_sq), 1e-8f));
}

// ---- finalize: the limiter and the step's coefficient -------------------------------------------
// The step size before limiting: lr·√(1−β2ᵗ)/(1−β1ᵗ)·√scale, computed on the host in double.
inline float step_size(const Hyper& h, int64_t step) {
  const double t = static_cast<double>(step);
  return static_cast<float>(h.lr * std::sqrt(1.0 - std::pow(h.beta2_exact, t)) / (1.0 - std::pow(h.beta1_exact, t)) *
                            std::sqrt(h.scale));
}

// u_norm = ‖U‖ before limiting. Returns the step's coefficient (step size / limiter) and stores
// the limited norm in *norm_prev. A NaN growth (a NaN or inf gradient now or in an earlier step)
// gives a NaN limiter, as max(growth, γ)/γ does in the reference: it does not switch the limiter off.
EMBER_HOST_DEVICE float step_coefficient(const Hyper& h, const Matrix& m, float u_norm) {
  float limiter = 1.0f;
  if (m.step > 1) {
    const float growth = div(u_norm, add(*m.norm_prev, 1e-8f));
    limiter = div(growth <= h.norm_growth_limit ? h.norm_growth_limit : growth, h.norm_growth_limit);
  }
  *m.norm_prev = div(u_norm, limiter);
  return div(m.step_size, limiter);
}

// ---- update: one weight element ----------------------------------------------------------------
// W' = W − coef·s·g, then W'' = W' − lr·wd·W' (not at lr·wd = 0, where it would turn an inf W' into NaN).
EMBER_HOST_DEVICE float updated_weight(const Hyper& h, float w, float g, float coef_s) {
  const float w1 = sub(w, mul(coef_s, g));
  return h.lr_wd == 0.0f ? w1 : sub(w1, mul(h.lr_wd, w1));
}

// fp32 → bf16 bits: round to nearest even, or stochastically with 16 random bits (an exactly
// representable value stays; inf and NaN round to nearest).
EMBER_HOST_DEVICE uint16_t to_bf16_bits(float x, bool stochastic, uint32_t random16) {
  const uint32_t bits = float_as_bits(x);
  if ((bits & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | ((bits & 0xFFFFu) ? 0x40u : 0u));
  if (stochastic) return static_cast<uint16_t>((bits + (random16 & 0xFFFFu)) >> 16);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// ---- launchers (stream: a cudaStream_t, opaque here) ---------------------------------------------
// Each takes `count` matrices of one step; the CUDA launchers handle many in one launch. The CPU
// ones take the same stream argument, unused, so that one table type holds either device's.
void projection_cpu(const Projection* projs, int count, void* stream = nullptr);
void finalize_cpu(const Hyper& h, const Matrix* mats, int count, void* stream = nullptr);
void update_cpu(const Hyper& h, const Matrix* mats, int count, void* stream = nullptr);

void projection_cuda(const Projection* projs, int count, void* stream);
void channel_sumsq_cuda(const Matrix* mats, int count, void* stream);
void moments_cuda(const Hyper& h, const Matrix* mats, int count, void* stream);
void finalize_cuda(const Hyper& h, const Matrix* mats, int count, void* stream);
void update_cuda(const Hyper& h, const Matrix* mats, int count, void* stream);

}  // namespace ember::apollo
