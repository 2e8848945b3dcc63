// CPU row kernels of the cross-entropy: the math of include/ember/cross_entropy.h, one row at a
// time, rows in parallel. Two passes per row in the forward (maximum, then the exponential sums)
// and one in the backward, each a branch-free loop over contiguous fp32 values with a polynomial
// exp, so they vectorize (AVX2 / AVX-512 clones picked at load time).
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_clones.h"
#include "env_switches.h"
#include "ember/cross_entropy.h"

namespace ember::ce {
namespace {

constexpr int kLanes = 16;

// e^x for x ≤ 88.7, 0 below −87.3 (so e^−inf = 0, a masked class): 2^k · e^r, |r| ≤ ln2/2, a
// degree-6 Taylor polynomial (relative error < 2e-7). Branch-free (selects), so loops vectorize.
inline float exp_poly(float x) {
  const bool underflow = x < -87.3f;
  x = std::clamp(x, -87.3f, 88.7f);
  const float k = std::nearbyint(x * 1.44269504f);
  const float r = (x - k * 0.693145752f) - k * 1.42860677e-06f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float e = p * bits_as_float(static_cast<uint32_t>(static_cast<int32_t>(k) + 127) << 23);
  return underflow ? 0.0f : e;
}

EMBER_CPU_WIDE_CLONES float span_max(const float* z, int64_t n) {
  float m[kLanes];
  std::fill(m, m + kLanes, -INFINITY);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) m[k] = std::max(m[k], z[j + k]);
  float r = -INFINITY;
  for (; j < n; ++j) r = std::max(r, z[j]);
  for (int k = 0; k < kLanes; ++k) r = std::max(r, m[k]);
  return r;
}

// Σ e^(z−m), Σ e^(z−m)·(m−z), Σ z; with Store, z is overwritten with e^(z−m) (the in-place gradient
// path reuses them).
template <bool Store>
EMBER_CPU_WIDE_CLONES void span_sums(float* z, int64_t n, float m, float& s, float& spd, float& sz) {
  float a[kLanes] = {}, b[kLanes] = {}, c[kLanes] = {};
  auto visit = [&](int64_t j, int k) {
    const float v = z[j], e = exp_poly(v - m);
    a[k] += e;
    b[k] += e > 0.0f ? e * (m - v) : 0.0f;  // 0·(−inf) is 0 here: a masked class adds no entropy
    c[k] += v;
    if (Store) z[j] = e;
  };
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) visit(j + k, k);
  for (; j < n; ++j) visit(j, 0);
  s = spd = sz = 0.0f;
  for (int k = 0; k < kLanes; ++k) {
    s += a[k];
    spd += b[k];
    sz += c[k];
  }
}

// g_j = (e_j·mul_e − minus)·scale in place, e_j = e^(z_j − max): p_j = e_j / Σe.
EMBER_CPU_WIDE_CLONES void span_grad_from_e(float* e, int64_t n, float mul_e, float minus, float scale) {
  for (int64_t j = 0; j < n; ++j) e[j] = (e[j] * mul_e - minus) * scale;
}

// g_j = ∂/∂z_j without the target term (added by the caller), for softcap off.
EMBER_CPU_WIDE_CLONES void span_grad(const float* z, float* g, int64_t n, LseParts lse, float mul_p, float minus,
                                     float scale) {
  for (int64_t j = 0; j < n; ++j) g[j] = (exp_poly((z[j] - lse.hi) - lse.lo) * mul_p - minus) * scale;
}

template <typename T>
void load_row(const T* src, float* dst, int64_t n, float cap) {
  if (cap > 0.0f) {
    for (int64_t j = 0; j < n; ++j) dst[j] = softcapped(static_cast<float>(src[j]), cap);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
  }
}

// The upstream gradient × weight of row i (0: ignored, weight 0 or no upstream gradient).
float scale_of_row(const RowsParams& p, int64_t i) {
  return ignored(p, i) ? 0.0f : row_scale(p.grad_rows[i * p.grad_rows_stride], p.weight ? p.weight[i] : 1.0f);
}

// Row i's gradient into out, from its (softcapped) values z (fp32, may alias out when T is
// float) or, with a softcap, from the raw row.
template <typename T>
void row_grad(const RowsParams& p, int64_t i, const T* raw, const float* z, T* out, LseParts lse, float* scratch) {
  const float scale = scale_of_row(p, i);
  if (scale == 0.0f) {  // exactly zero
    std::fill(out, out + p.vocab, T(0.0f));
    return;
  }
  float* g = std::is_same_v<T, float> ? reinterpret_cast<float*>(out) : scratch;
  if (p.opt.softcap > 0.0f) {
    for (int64_t j = 0; j < p.vocab; ++j)
      g[j] = grad_logit(p.opt, static_cast<float>(raw[j]), j == p.target[i], lse, p.vocab, scale);
  } else {
    // the target element by the shared formula, (p − 1)·scale rather than p·scale − scale (which
    // is inf − inf for an infinite weight); z[y] read first, as g may be z
    const int64_t y = p.target[i];
    const float gy = grad_logit(p.opt, z[y], true, lse, p.vocab, scale);
    span_grad(z, g, p.vocab, lse, p_factor(p.opt, lse.hi), smooth_term(p.opt, p.vocab), scale);
    g[y] = gy;
  }
  if (!std::is_same_v<T, float>)
    for (int64_t j = 0; j < p.vocab; ++j) out[j] = static_cast<T>(g[j]);
}

// The row's statistics in the CUDA forward's order (rows.cu): kRowThreads strided online
// log-sum-exps, an xor butterfly within each warp, then the warps' results merged in order.
RowStats cuda_order_stats(const float* z, int64_t n) {
  std::vector<RowStats> lane(kRowThreads), before;
  for (int t = 0; t < kRowThreads; ++t)
    for (int64_t j = t; j < n; j += kRowThreads) lane[t].add(z[j]);
  for (int off = 16; off > 0; off >>= 1) {
    before = lane;
    for (int t = 0; t < kRowThreads; ++t) lane[t].merge(before[t ^ off]);
  }
  return merge_warps(lane.data(), 32);
}

template <typename T>
void forward_typed(const RowsParams& p) {
  const char* env = env_value("EMBER_CE_CUDA_ORDER");  // tests: emulate the CUDA forward's order
  const bool cuda_order = env != nullptr && std::string(env) != "0";
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    // fp32 without a softcap is read in place; anything else goes through an fp32 row buffer
    const bool direct = std::is_same_v<T, float> && p.opt.softcap == 0.0f;
    std::vector<float> buf(direct ? 0 : p.vocab), scratch(p.grad && !std::is_same_v<T, float> ? p.vocab : 0);
    for (int64_t i = r0; i < r1; ++i) {
      const T* row = static_cast<const T*>(p.logits) + row_start(i, p.ld);
      const float* z = reinterpret_cast<const float*>(row);
      if (!direct) {
        load_row(row, buf.data(), p.vocab, p.opt.softcap);
        z = buf.data();
      }
      RowStats s;
      s.max = span_max(z, p.vocab);
      const float shift = s.max == -INFINITY ? 0.0f : s.max;  // all −inf: e = 0, not e^NaN
      // fp32 gradient written over the logits themselves: keep the exponentials for it
      float* in_place = direct && p.grad == p.logits ? static_cast<float*>(p.grad) + row_start(i, p.grad_ld) : nullptr;
      const int64_t y = p.target[i];
      const bool ign = ignored(p, i);
      const float zy = ign ? 0.0f : z[y];  // (read before the row is overwritten)
      if (cuda_order) {
        s = cuda_order_stats(z, p.vocab);
        float unused[3];  // the exponentials only, for the in-place gradient
        if (in_place) span_sums<true>(in_place, p.vocab, shift, unused[0], unused[1], unused[2]);
      } else if (in_place) {
        span_sums<true>(in_place, p.vocab, shift, s.sum, s.sum_pd, s.sum_z);
      } else {
        span_sums<false>(const_cast<float*>(z), p.vocab, shift, s.sum, s.sum_pd, s.sum_z);  // reads only
      }
      p.lse[i] = s.lse_exact();
      const LseParts lse = split_lse(p.lse[i]);
      p.loss[i] = ign ? 0.0f : row_loss(p.opt, s, zy, p.vocab, p.weight ? p.weight[i] : 1.0f);
      if (p.logprob) p.logprob[i] = ign ? 0.0f : s.minus_lse(zy);
      if (p.entropy) p.entropy[i] = ign ? 0.0f : s.entropy();
      if (in_place) {
        const float scale = scale_of_row(p, i);
        if (scale == 0.0f) {
          std::fill(in_place, in_place + p.vocab, 0.0f);
        } else {  // p_j·(1 + 2·zl·lse) − ls/V with p_j = e_j/Σe
          span_grad_from_e(in_place, p.vocab, p_factor(p.opt, lse.hi) / s.sum, smooth_term(p.opt, p.vocab), scale);
          in_place[y] = grad_logit(p.opt, zy, true, lse, p.vocab, scale);  // as row_grad does
        }
      } else if (p.grad) {
        row_grad(p, i, row, z, static_cast<T*>(p.grad) + row_start(i, p.grad_ld), lse, scratch.data());
      }
    }
  });
}

template <typename T>
void backward_typed(const RowsParams& p) {
  at::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
    const bool direct = std::is_same_v<T, float>;
    std::vector<float> z(direct ? 0 : p.vocab), scratch(direct ? 0 : p.vocab);
    for (int64_t i = r0; i < r1; ++i) {
      const T* row = static_cast<const T*>(p.logits) + row_start(i, p.ld);
      const float* zr = reinterpret_cast<const float*>(row);
      if (!direct && p.opt.softcap == 0.0f) {
        load_row(row, z.data(), p.vocab, 0.0f);
        zr = z.data();
      }
      row_grad(p, i, row, zr, static_cast<T*>(p.grad) + row_start(i, p.grad_ld), split_lse(p.lse[i]), scratch.data());
    }
  });
}

}  // namespace

void rows_forward_cpu(const RowsParams& p, void*) {
  dispatch_float<float, c10::Half, c10::BFloat16>(p.type,
                                                  [&](auto t) { forward_typed<typename decltype(t)::type>(p); });
}

void rows_backward_cpu(const RowsParams& p, void*) {
  dispatch_float<float, c10::Half, c10::BFloat16>(p.type,
                                                  [&](auto t) { backward_typed<typename decltype(t)::type>(p); });
}

}  // namespace ember::ce
