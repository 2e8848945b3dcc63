// CPU kernels of the APOLLO step: the math of include/ember/apollo.h over each matrix.
//
// Compiled with -ffp-contract=off (the projection must match the GPU's bit for bit) and
// -fno-math-errno (so √ vectorizes); the hot loops get AVX2 (and AVX-512) clones picked at load time.
// Channel sums use 8 running partial sums so that they vectorize in a fixed order.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_clones.h"
#include "ember/apollo.h"

// The projection (Philox, log, sin/cos) and the moments (√, ÷) are compute-bound: they get the
// wide clones; the channel sums and the update stream memory.

namespace ember::apollo {
namespace {

constexpr int kLanes = 8;

float fold(const float (&acc)[kLanes]) {
  float s = 0.0f;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// kBatch Philox groups (4·kBatch elements of P) at once, every step a loop over the lanes, so
// the compiler vectorizes across groups. Same functions, same rounding as projection4().
constexpr int kBatch = 16;

EMBER_CPU_WIDE_CLONES void projection_batch(uint32_t group0, const Projection& p, float inv_sqrt_r, float* out) {
  uint32_t x[kBatch], y[kBatch], z[kBatch], w[kBatch];
  for (int l = 0; l < kBatch; ++l) {
    x[l] = group0 + static_cast<uint32_t>(l);
    y[l] = static_cast<uint32_t>(random::Domain::kProjection);
    z[l] = p.stream;
    w[l] = p.refresh;
  }
  uint32_t k0 = static_cast<uint32_t>(p.seed), k1 = static_cast<uint32_t>(p.seed >> 32);
  for (int round = 0; round < 10; ++round) {
    for (int l = 0; l < kBatch; ++l) random::philox_round(x[l], y[l], z[l], w[l], k0, k1);
    k0 += random::kPhiloxW0;
    k1 += random::kPhiloxW1;
  }
  float ra[kBatch], rb[kBatch], sa[kBatch], ca[kBatch], sb[kBatch], cb[kBatch];
  for (int l = 0; l < kBatch; ++l) {
    ra[l] = random::normal_radius(x[l]);
    rb[l] = random::normal_radius(z[l]);
  }
  for (int l = 0; l < kBatch; ++l) {
    random::sincos_turns(random::normal_turns(y[l]), sa[l], ca[l]);
    random::sincos_turns(random::normal_turns(w[l]), sb[l], cb[l]);
  }
  for (int l = 0; l < kBatch; ++l) {
    out[4 * l + 0] = mul(mul(ra[l], ca[l]), inv_sqrt_r);
    out[4 * l + 1] = mul(mul(ra[l], sa[l]), inv_sqrt_r);
    out[4 * l + 2] = mul(mul(rb[l], cb[l]), inv_sqrt_r);
    out[4 * l + 3] = mul(mul(rb[l], sb[l]), inv_sqrt_r);
  }
}

// Groups [g0, g1) of P; `total` elements in all.
void fill_projection(const Projection& p, int64_t g0, int64_t g1, int64_t total, float inv_sqrt_r) {
  float* out = static_cast<float*>(p.out);
  float buf[4 * kBatch];
  for (int64_t g = g0; g < g1; g += kBatch) {
    const int64_t e = 4 * g, n = std::min<int64_t>(4 * kBatch, total - e);
    if (n == 4 * kBatch && g + kBatch <= g1) {
      projection_batch(static_cast<uint32_t>(g), p, inv_sqrt_r, out + e);
    } else {  // the tail: a whole batch into a buffer, keep what belongs to this range
      projection_batch(static_cast<uint32_t>(g), p, inv_sqrt_r, buf);
      const int64_t end = std::min(total, 4 * g1);
      std::copy(buf, buf + (end - e), out + e);
    }
  }
}

template <typename T>
EMBER_CPU_CLONES float span_sumsq(const T* g, int64_t n) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const float v = static_cast<float>(g[j + k]);
      acc[k] += v * v;
    }
  for (; j < n; ++j) {
    const float v = static_cast<float>(g[j]);
    acc[0] += v * v;
  }
  return fold(acc);
}

// acc[j] += g[j]² over one row of G (the channels are columns).
template <typename T>
EMBER_CPU_CLONES void accumulate_squares(const T* g, float* acc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = static_cast<float>(g[j]);
    acc[j] += v * v;
  }
}

EMBER_CPU_WIDE_CLONES void moments_row(const Hyper& h, const float* r, float* m, float* v, int64_t n, float& rt_sq,
                                       float& r_sq) {
  const Hyper hl = h;  // a local copy: stores to m and v cannot alias it, so the loop vectorizes
  float a[kLanes] = {}, b[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < kLanes; ++k) moment_update(hl, r[j + k], m[j + k], v[j + k], a[k], b[k]);
  for (; j < n; ++j) moment_update(hl, r[j], m[j], v[j], a[0], b[0]);
  rt_sq = fold(a);
  r_sq = fold(b);
}

// Row i of W (and G): per-element channel factors `cs` (transposed: the channels are columns)
// or one factor for the row.
template <typename T>
EMBER_CPU_CLONES void update_row(const Hyper& h, T* w, const T* g, int64_t n, const float* cs, float row_cs) {
  const Hyper hl = h;
  if (cs) {
    for (int64_t j = 0; j < n; ++j)
      w[j] = static_cast<T>(updated_weight(hl, static_cast<float>(w[j]), static_cast<float>(g[j]), cs[j]));
  } else {  // one factor for the row: a loop the compiler vectorizes without a gather of factors
    for (int64_t j = 0; j < n; ++j)
      w[j] = static_cast<T>(updated_weight(hl, static_cast<float>(w[j]), static_cast<float>(g[j]), row_cs));
  }
}

// bf16 weights with stochastic rounding: random words from the (seed, stream, step) stream,
// word e % 4 of group e / 4 for element e of W.
EMBER_CPU_CLONES void update_row_bf16_sr(const Hyper& h, const Matrix& mt, int64_t i, const float* cs, float row_cs) {
  auto* w = static_cast<c10::BFloat16*>(mt.w) + i * mt.cols;
  const auto* g = static_cast<const c10::BFloat16*>(mt.g) + i * mt.cols;
  const int64_t e0 = i * mt.cols;
  random::U32x4 words{};
  for (int64_t j = 0; j < mt.cols; ++j) {
    const int64_t e = e0 + j;
    if (j == 0 || e % 4 == 0)
      words = random::random_words(h.seed, random::Domain::kRounding, mt.stream, static_cast<uint32_t>(mt.step),
                                   static_cast<uint32_t>(e / 4));
    const uint32_t word = e % 4 == 0 ? words.x : e % 4 == 1 ? words.y : e % 4 == 2 ? words.z : words.w;
    const float x = updated_weight(h, static_cast<float>(w[j]), static_cast<float>(g[j]), cs ? cs[j] : row_cs);
    w[j] = c10::BFloat16(to_bf16_bits(x, true, word >> 16), c10::BFloat16::from_bits());
  }
}

template <typename T>
void update_typed(const Hyper& h, const Matrix& m) {
  const float coef = *m.coef;
  // Channel factors coef·s_i: per row, or per column when transposed.
  std::vector<float> cs(m.long_dim());
  for (int64_t i = 0; i < m.long_dim(); ++i) cs[i] = mul(coef, h.tensor_scale ? m.rt_sq[0] : m.rt_sq[i]);
  const bool sr = std::is_same_v<T, c10::BFloat16> && h.stochastic_rounding;
  at::parallel_for(0, m.rows, 8, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      // One factor for the row unless the channels are columns with a factor each.
      const float* col_cs = m.transposed() && !h.tensor_scale ? cs.data() : nullptr;
      const float row_cs = col_cs ? 0.0f : cs[m.transposed() ? 0 : i];
      if (sr) {
        update_row_bf16_sr(h, m, i, col_cs, row_cs);
      } else {
        update_row(h, static_cast<T*>(m.w) + i * m.cols, static_cast<const T*>(m.g) + i * m.cols, m.cols, col_cs,
                   row_cs);
      }
    }
  });
}

// Channels [i0, i1) of one matrix: G's block as fp32 (a view when G is fp32), R's block by the
// BLAS, then the block's channel sums of squares and the moments while G's and R's blocks are in
// cache (summing after the GEMM, not before, lets the GEMM take the block's first read from
// memory; bench/NOTES.md, apollo, has the measurement).
void project_block(const Hyper& h, const Matrix& m, const at::Tensor& g, const at::Tensor& proj, int64_t i0, int64_t i1,
                   at::Tensor& gbuf, at::Tensor& rbuf) {
  const int64_t n = i1 - i0;
  at::Tensor gv = m.transposed() ? g.slice(1, i0, i1).t() : g.slice(0, i0, i1);  // n × S
  if (gv.scalar_type() != at::kFloat) gv = gbuf.slice(0, 0, n).copy_(gv);
  at::Tensor r = rbuf.slice(0, 0, n);
  at::mm_out(r, gv, proj.t());
  const float* gp = gv.data_ptr<float>();
  if (!m.transposed() || gv.is_contiguous()) {
    const int64_t ld = gv.stride(0);
    at::parallel_for(0, n, 16, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) m.gsq[i0 + i] = span_sumsq(gp + i * ld, gv.size(1));
    });
  } else {  // gv is G's column block: accumulate row by row of G
    const int64_t ld = gv.stride(1);
    std::fill(m.gsq + i0, m.gsq + i1, 0.0f);
    at::parallel_for(0, n, 64, [&](int64_t a, int64_t b) {
      for (int64_t k = 0; k < gv.size(1); ++k) accumulate_squares(gp + k * ld + a, m.gsq + i0 + a, b - a);
    });
  }
  const float* rp = r.data_ptr<float>();
  at::parallel_for(0, n, 16, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) {
      const int64_t o = (i0 + i) * h.rank;
      moments_row(h, rp + i * h.rank, m.exp_avg + o, m.exp_avg_sq + o, h.rank, m.rt_sq[i0 + i], m.r_sq[i0 + i]);
    }
  });
}

// Rank 1 (APOLLO-Mini): R is a matrix-vector product, which a BLAS runs as a separate pass over G
// at a speed that varies from machine to machine; here R and ‖Gv_i‖² come out of one pass of our
// own, so the step reads G twice in all (here and in the update), as the traffic floor does.
// Eight lanes as one GCC vector (one AVX2 register; two SSE ones in the baseline clone): lane k
// sums elements k, k + 8, ..., the order of the scalar 8-lane loops above. Written out because
// the compiler's own vectorization of two interleaved 8-lane sums shuffles lanes through memory.
using Lanes = float __attribute__((vector_size(4 * kLanes)));

template <typename T>
Lanes load_lanes(const T* x) {
  Lanes v;
  for (int k = 0; k < kLanes; ++k) v[k] = static_cast<float>(x[k]);
  return v;
}

template <typename T>
EMBER_CPU_CLONES void dot_sumsq(const T* g, const float* p, int64_t n, float& r, float& gsq) {
  Lanes a = {}, b = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const Lanes v = load_lanes(g + j);
    a += v * load_lanes(p + j);
    b += v * v;
  }
  float ra[kLanes], rb[kLanes];
  for (int k = 0; k < kLanes; ++k) ra[k] = a[k], rb[k] = b[k];
  for (; j < n; ++j) {
    const float v = static_cast<float>(g[j]);
    ra[0] += v * p[j];
    rb[0] += v * v;
  }
  r = fold(ra);
  gsq = fold(rb);
}

// One row of G into the column channels' sums: r[j] += p·g[j], gsq[j] += g[j]².
template <typename T>
EMBER_CPU_CLONES void axpy_squares(const T* g, float p, float* r, float* gsq, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = static_cast<float>(g[j]);
    r[j] += p * v;
    gsq[j] += v * v;
  }
}

template <typename T>
void project_rank1(const Hyper& h, const Matrix& m, const T* g, const float* p) {
  std::vector<float> r(m.long_dim(), 0.0f);
  if (m.transposed()) {  // channels are G's columns: each task sums all rows over its columns, in row order
    std::fill(m.gsq, m.gsq + m.cols, 0.0f);
    at::parallel_for(0, m.cols, 256, [&](int64_t a, int64_t b) {
      for (int64_t i = 0; i < m.rows; ++i) axpy_squares(g + i * m.cols + a, p[i], r.data() + a, m.gsq + a, b - a);
    });
  } else {
    at::parallel_for(0, m.rows, 16, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) dot_sumsq(g + i * m.cols, p, m.cols, r[i], m.gsq[i]);
    });
  }
  at::parallel_for(0, m.long_dim(), 1024, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) moments_row(h, &r[i], m.exp_avg + i, m.exp_avg_sq + i, 1, m.rt_sq[i], m.r_sq[i]);
  });
}

}  // namespace

void project_moments_cpu(const Hyper& h, const Matrix& m, const at::Tensor& g, const at::Tensor& proj) {
  if (h.rank == 1) {
    const float* p = proj.data_ptr<float>();
    if (g.scalar_type() == at::kFloat) {
      project_rank1(h, m, g.data_ptr<float>(), p);
    } else {
      project_rank1(h, m, g.data_ptr<c10::BFloat16>(), p);
    }
    return;
  }
  // Blocks of channels whose R block (512 KB at most) stays in cache until the moments read it,
  // and whose GEMM is still large enough for the BLAS (block sizes measured: bench/NOTES.md).
  const int64_t block = std::clamp<int64_t>((512 << 10) / (4 * h.rank), 64, 4096);
  const int64_t n = std::min(block, m.long_dim());
  at::Tensor rbuf = at::empty({n, h.rank}, g.options().dtype(at::kFloat));
  at::Tensor gbuf =
      g.scalar_type() == at::kFloat ? at::Tensor() : at::empty({n, m.short_dim()}, g.options().dtype(at::kFloat));
  for (int64_t i0 = 0; i0 < m.long_dim(); i0 += block)
    project_block(h, m, g, proj, i0, std::min(m.long_dim(), i0 + block), gbuf, rbuf);
}

void projection_cpu(const Projection* projs, int count, void*) {
  for (int t = 0; t < count; ++t) {
    const Projection& p = projs[t];
    const float inv = inv_sqrt_rank(p.rank);
    const int64_t total = p.rank * p.dim;
    // Tasks start on whole batches, so every batch is generated once.
    const int64_t batches = ceil_div(ceil_div(total, 4), kBatch);
    at::parallel_for(0, batches, 16, [&](int64_t b0, int64_t b1) {
      fill_projection(p, b0 * kBatch, std::min(ceil_div(total, 4), b1 * kBatch), total, inv);
    });
  }
}

void finalize_cpu(const Hyper& h, const Matrix* mats, int count, void*) {
  for (int t = 0; t < count; ++t) {
    const Matrix& m = mats[t];
    const int64_t n = m.long_dim();
    double u_sq = 0.0;
    if (h.tensor_scale) {  // one s: the tensor's norms are the channels' summed
      double a = 0.0, b = 0.0, gsq = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        a += m.rt_sq[i];
        b += m.r_sq[i];
        gsq += m.gsq[i];
      }
      const float s = scaling_factor(static_cast<float>(a), static_cast<float>(b));
      m.rt_sq[0] = s;
      u_sq = static_cast<double>(s) * s * gsq;
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const float s = scaling_factor(m.rt_sq[i], m.r_sq[i]);
        m.rt_sq[i] = s;
        u_sq += static_cast<double>(s) * s * m.gsq[i];
      }
    }
    *m.coef = step_coefficient(h, m, static_cast<float>(std::sqrt(u_sq)));
  }
}

void update_cpu(const Hyper& h, const Matrix* mats, int count, void*) {
  for (int t = 0; t < count; ++t) {
    if (mats[t].type == ScalarType::kBFloat16) {
      update_typed<c10::BFloat16>(h, mats[t]);
    } else {
      update_typed<float>(h, mats[t]);
    }
  }
}

}  // namespace ember::apollo
