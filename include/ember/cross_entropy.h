// cross_entropy family: the kernels' torch-free API (parameter structs, launchers) and the
// per-token weighted cross-entropy's arithmetic, shared by the CPU and CUDA kernels.
//
// Per row i of logits z (V classes; softcap c > 0 first maps z ← c·tanh(z/c)), target y,
// weight w (1 when absent), label smoothing ls, z-loss coefficient zl:
//   lse = log Σ_v exp(z_v)
//   loss_i = w·[(1−ls)·(lse − z_y) + ls·(lse − mean_v z_v) + zl·lse²]      (0 when y is ignored)
//   ∂loss_i/∂z_v = w·[p_v·(1 + 2·zl·lse) − (1−ls)·[v = y] − ls/V],  p = softmax(z)
//   and through the softcap ∂z/∂z_raw = 1 − (z/c)².
// Per-row outputs besides the loss: lse, log p(y) = z_y − lse, entropy = lse − Σ p_v·z_v.
//
// lse = max + log Σ exp(z − max) is kept as its two parts (or their exact sum, a double): an lse
// rounded to fp32 is off by up to |lse|·2^-24, and p = exp(z − lse) with it by as much relative,
// which at logits of 1000 is a thousand times torch's error. z − max is exact where p matters.
#pragma once

#include <cstdint>

#include "ember/common.h"

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace ember::ce {

EMBER_HOST_DEVICE float exp_f(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);  // ex2.approx: 2 ulp, fine for probabilities
#else
  return std::exp(x);
#endif
}

EMBER_HOST_DEVICE float log_f(float x) {
#if defined(__CUDA_ARCH__)
  return __logf(x);
#else
  return std::log(x);
#endif
}

EMBER_HOST_DEVICE float tanh_f(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  return std::tanh(x);
#endif
}

struct Options {
  int64_t ignore_index = -100;
  float label_smoothing = 0.0f;
  float z_loss = 0.0f;
  float softcap = 0.0f;  // 0: off
};

EMBER_HOST_DEVICE float softcapped(float z, float cap) { return cap > 0.0f ? cap * tanh_f(z / cap) : z; }

// Running statistics of one row, mergeable in any order (online log-sum-exp).
struct RowStats {
  float max = -INFINITY;  // running maximum
  float sum = 0.0f;       // Σ exp(z − max)
  float sum_pd = 0.0f;    // Σ exp(z − max)·(max − z) ≥ 0: entropy = log Σ + sum_pd/Σ, no cancellation
  float sum_z = 0.0f;     // Σ z                (label smoothing)

  EMBER_HOST_DEVICE void add(float z) {
    if (z == -INFINITY) {  // a masked class: probability 0, nothing to add but to Σz
      sum_z += z;
      return;
    }
    if (z > max) {  // rescale what is there to the new maximum
      const float r = exp_f(max - z);
      sum_pd = sum == 0.0f ? 0.0f : r * (sum_pd + (z - max) * sum);
      sum *= r;
      max = z;
    }
    const float e = exp_f(z - max);
    sum += e;
    sum_pd += e * (max - z);
    sum_z += z;
  }

  // sum == 0 exactly when only −inf was seen (a NaN makes sum NaN, and must survive the merge).
  EMBER_HOST_DEVICE void merge(const RowStats& o) {
    if (o.sum == 0.0f) {
      sum_z += o.sum_z;
      return;
    }
    if (sum == 0.0f) {
      const float z = sum_z;
      *this = o;
      sum_z += z;
      return;
    }
    const float m = max > o.max ? max : o.max;
    const float a = exp_f(max - m), b = exp_f(o.max - m);
    sum_pd = a * (sum_pd + (m - max) * sum) + b * (o.sum_pd + (m - o.max) * o.sum);
    sum = sum * a + o.sum * b;
    sum_z += o.sum_z;
    max = m;
  }

  // A +inf logit poisons the row (NaN, like a NaN logit); an all −inf row has lse −inf and a
  // NaN entropy (there is no distribution). The semantics are in python/ember/ops/cross_entropy.py.
  EMBER_HOST_DEVICE float log_sum() const { return max == INFINITY ? NAN : log_f(sum); }  // lse − max
  EMBER_HOST_DEVICE float lse() const { return max + log_sum(); }
  EMBER_HOST_DEVICE double lse_exact() const { return double(max) + double(log_sum()); }  // no rounding
  EMBER_HOST_DEVICE float entropy() const { return max == INFINITY ? NAN : log_f(sum) + sum_pd / sum; }
  // z − lse for a logit z of the row, as (z − max) − log Σ: the log-prob of z
  EMBER_HOST_DEVICE float minus_lse(float z) const { return (z - max) - log_sum(); }
};

// The row's loss from its statistics and its (softcapped) target logit.
EMBER_HOST_DEVICE float row_loss(const Options& o, const RowStats& s, float z_target, int64_t vocab, float weight) {
  if (weight == 0.0f) return 0.0f;  // weight 0 masks the token whatever its logits (inf · 0 would be NaN)
  const float lse = s.lse();
  const float smooth =
      o.label_smoothing > 0.0f ? -o.label_smoothing * s.minus_lse(s.sum_z / static_cast<float>(vocab)) : 0.0f;
  return weight * (-(1.0f - o.label_smoothing) * s.minus_lse(z_target) + smooth + o.z_loss * lse * lse);
}

// An lse as fp32 parts, lse = hi + lo (lo = 0 where hi is not finite): z − lse is (z − hi) − lo,
// exact in its first step wherever p is not negligible.
struct LseParts {
  float hi, lo;
};
EMBER_HOST_DEVICE LseParts split_lse(double lse) {
  const float hi = static_cast<float>(lse);
  return {hi, hi - hi == 0.0f ? static_cast<float>(lse - double(hi)) : 0.0f};
}

// The scale of row i's gradient: upstream gradient × token weight, exactly 0 for weight 0 (a
// masked token) whatever the upstream gradient (inf · 0 would make the row NaN).
EMBER_HOST_DEVICE float row_scale(float upstream, float weight) { return weight == 0.0f ? 0.0f : upstream * weight; }

// The gradient of loss_i/w in z_v is p_v·p_factor − smooth_term, minus target_term at v = y.
// (The CPU row kernels apply these three terms in vectorized loops of their own.)
EMBER_HOST_DEVICE float p_factor(const Options& o, float lse) { return 1.0f + 2.0f * o.z_loss * lse; }
EMBER_HOST_DEVICE float smooth_term(const Options& o, int64_t vocab) {
  return o.label_smoothing / static_cast<float>(vocab);
}
EMBER_HOST_DEVICE float target_term(const Options& o) { return 1.0f - o.label_smoothing; }

// ∂(scale·loss_i)/∂z_raw for one element: z_raw the logit as stored, lse the row's, scale
// = row_scale(upstream gradient, weight); exactly 0 when scale is (whatever the logit).
EMBER_HOST_DEVICE float grad_logit(const Options& o, float z_raw, bool is_target, LseParts lse, int64_t vocab,
                                   float scale) {
  const float z = softcapped(z_raw, o.softcap);
  // z ≤ lse for every logit of the row; the clamp only acts on the zero-filled padding a GEMM tile
  // reads past the vocabulary, where exp(0 − lse) would overflow for lse < −88 (NaN stays NaN)
  const float d = (z - lse.hi) - lse.lo;
  const float p = exp_f(d > 0.0f ? 0.0f : d);
  float g = p * p_factor(o, lse.hi) - smooth_term(o, vocab);
  if (is_target) g -= target_term(o);
  if (o.softcap > 0.0f) {
    const float t = z / o.softcap;
    g *= 1.0f - t * t;
  }
  return scale == 0.0f ? 0.0f : g * scale;
}

// The softmax-gradient GEMMs' per-element gradient (include/ember/cross_entropy_softmax_grad.h), read
// from the side tensor's group for the element's row and vocabulary tile: (lse.hi, scale) as
// float bits, the target's column relative to the tile as an int32, lse.lo as float bits.
// `column`: the element's column within the tile. The CUDA kernels' transform and the CPU's
// version both call this.
EMBER_HOST_DEVICE float grad_logit_from_side(const Options& o, float z, const uint32_t* group, int64_t column,
                                             int64_t vocab) {
  const bool is_target = column == int64_t(int32_t(group[2]));
  const LseParts lse{bits_as_float(group[0]), bits_as_float(group[3])};
  return grad_logit(o, z, is_target, lse, vocab, bits_as_float(group[1]));
}

// ---- row kernels ------------------------------------------------------------------------------------
// The CUDA forward's threads per row: each keeps RowStats over columns t, t + kRowThreads, …,
// merged by warp (xor butterfly), then warp 0..15 in order. The CPU emulates this order on
// request (EMBER_CE_CUDA_ORDER=1) so CPU tests see the CUDA arithmetic.
constexpr int kRowThreads = 512;

// The last step of that order: the warps' statistics merged warp 0 first, then 1, 2, …; part[w·stride]
// holds warp w's (the CUDA kernel's shared array, stride 1; the CPU emulation's lanes, stride 32).
EMBER_HOST_DEVICE RowStats merge_warps(const RowStats* part, int stride) {
  RowStats t = part[0];
  for (int w = 1; w < kRowThreads / 32; ++w) t.merge(part[w * stride]);
  return t;
}

// logits: rows × vocab (row stride ld), fp32 / fp16 / bf16. target: int64 per row.
struct RowsParams {
  void* logits = nullptr;
  ScalarType type = ScalarType::kFloat32;
  int64_t rows = 0, vocab = 0, ld = 0;
  const int64_t* target = nullptr;
  const float* weight = nullptr;  // per row, or null (1)
  Options opt;
  // forward outputs (per row; logprob and entropy may be null): fp32, lse float64 (lse_exact)
  float* loss = nullptr;
  double* lse = nullptr;
  float* logprob = nullptr;
  float* entropy = nullptr;
  // backward: grad (rows × vocab, row stride grad_ld; may be `logits` itself) from the saved
  // lse (its exact value, split_lse) and the upstream gradient per row (grad_rows[i·grad_rows_stride]; stride 0: one
  // value). A forward given grad and grad_rows writes the gradient too, in the same visit of each row.
  void* grad = nullptr;
  int64_t grad_ld = 0;
  ScalarType grad_type = ScalarType::kFloat32;  // CUDA may write another type than the logits'
  const float* grad_rows = nullptr;
  int64_t grad_rows_stride = 1;
};

EMBER_HOST_DEVICE bool ignored(const RowsParams& p, int64_t row) { return p.target[row] == p.opt.ignore_index; }

// Where row `row` of a row-major array with row stride ld starts: 64-bit, as N × V passes 2^31 (32k
// tokens × a 128k vocabulary). Every row kernel addresses logits and gradients through it.
EMBER_HOST_DEVICE int64_t row_start(int64_t row, int64_t ld) { return row * ld; }

void rows_forward_cpu(const RowsParams& p, void* stream = nullptr);  // stream: unused (same type as CUDA's)
void rows_backward_cpu(const RowsParams& p, void* stream = nullptr);
void rows_forward_cuda(const RowsParams& p, void* stream);
void rows_backward_cuda(const RowsParams& p, void* stream);

}  // namespace ember::ce
