// CUDA kernels of the APOLLO step: the math of include/ember/apollo.h, many matrices per launch.
//
// Every kernel takes a table of up to kTable matrices by value (kernel parameters, no upload)
// and blockIdx.y picks the matrix; grids are sized for the largest and blocks past a smaller
// matrix's end return at once. The driver (apollo_driver.cpp) sorts matrices by shape, so a table is
// usually one shape. Reductions run in a fixed order (no atomics): a step is deterministic.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ember/apollo.h"

namespace ember::apollo {
namespace {

constexpr int kTable = 16;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

struct MatrixTable {
  Matrix m[kTable];
  int count;
};
struct ProjectionTable {
  Projection p[kTable];
  int count;
};

void check(cudaError_t err, const char* what) { cuda_check(err, "ember apollo", what); }

__device__ __forceinline__ float load(const void* p, ScalarType t, int64_t i) {
  return t == ScalarType::kBFloat16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i])
                                    : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Block-wide sum in a fixed order; every thread gets the total.
__device__ double block_sum(double v, double* scratch) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0.0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

// ---- P: one thread per group of four elements ----------------------------------------------------
__global__ void __launch_bounds__(kThreads) projection_kernel(ProjectionTable table, float inv_sqrt_r0) {
  const Projection& p = table.p[blockIdx.y];
  const int64_t total = p.rank * p.dim;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (4 * group >= total) return;
  // Every entry of one table has the same rank (one step, one group), so 1/√r is shared.
  float v[4];
  projection4(p.seed, p.stream, p.refresh, static_cast<uint32_t>(group), inv_sqrt_r0, v);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t e = 4 * group + k;
    if (e >= total) break;
    if (p.type == ScalarType::kBFloat16) {
      static_cast<__nv_bfloat16*>(p.out)[e] = __float2bfloat16_rn(v[k]);
    } else {
      static_cast<float*>(p.out)[e] = v[k];
    }
  }
}

// ---- ‖Gv_i‖²: a warp per row of G, or 32 columns × 8 row slices per block when transposed ------
__global__ void __launch_bounds__(kThreads) channel_sumsq_kernel(MatrixTable table) {
  const Matrix& m = table.m[blockIdx.y];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (!m.transposed()) {
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
    if (row >= m.rows) return;
    float acc = 0.f;
    for (int64_t j = lane; j < m.cols; j += 32) {
      const float v = load(m.g, m.type, row * m.cols + j);
      acc += v * v;
    }
    acc = warp_sum(acc);
    if (lane == 0) m.gsq[row] = acc;
  } else {
    __shared__ float partial[kWarps][32];
    const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + lane;
    if (static_cast<int64_t>(blockIdx.x) * 32 >= m.cols) return;
    float acc = 0.f;
    if (col < m.cols)
      for (int64_t i = warp; i < m.rows; i += kWarps) {
        const float v = load(m.g, m.type, i * m.cols + col);
        acc += v * v;
      }
    partial[warp][lane] = acc;
    __syncthreads();
    if (warp == 0 && col < m.cols) {
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += partial[w][lane];
      m.gsq[col] = total;
    }
  }
}

// ---- moments: a warp per channel (row of the L×r state) ------------------------------------------
__global__ void __launch_bounds__(kThreads) moments_kernel(Hyper h, MatrixTable table) {
  const Matrix& m = table.m[blockIdx.y];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (row >= m.long_dim()) return;
  const int64_t o = row * h.rank;
  float rt_sq = 0.f, r_sq = 0.f;
  for (int64_t j = lane; j < h.rank; j += 32) {
    float mv = m.exp_avg[o + j], vv = m.exp_avg_sq[o + j];
    moment_update(h, m.r[o + j], mv, vv, rt_sq, r_sq);
    m.exp_avg[o + j] = mv;
    m.exp_avg_sq[o + j] = vv;
  }
  rt_sq = warp_sum(rt_sq);
  r_sq = warp_sum(r_sq);
  if (lane == 0) {
    m.rt_sq[row] = rt_sq;
    m.r_sq[row] = r_sq;
  }
}

// ---- finalize: a block per matrix: s, ‖U‖, the limiter, the coefficient ---------------------------
__global__ void __launch_bounds__(kThreads) finalize_kernel(Hyper h, MatrixTable table) {
  __shared__ double scratch[kWarps];
  const Matrix& m = table.m[blockIdx.x];
  const int64_t n = m.long_dim();
  double u_sq;
  float s_tensor = 0.f;
  if (h.tensor_scale) {
    double a = 0.0, b = 0.0, g = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      a += m.rt_sq[i];
      b += m.r_sq[i];
      g += m.gsq[i];
    }
    a = block_sum(a, scratch);
    b = block_sum(b, scratch);
    g = block_sum(g, scratch);
    s_tensor = scaling_factor(static_cast<float>(a), static_cast<float>(b));
    u_sq = static_cast<double>(s_tensor) * s_tensor * g;
  } else {
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
      const float s = scaling_factor(m.rt_sq[i], m.r_sq[i]);
      m.rt_sq[i] = s;
      acc += static_cast<double>(s) * s * m.gsq[i];
    }
    u_sq = block_sum(acc, scratch);
  }
  if (threadIdx.x == 0) {
    if (h.tensor_scale) m.rt_sq[0] = s_tensor;
    *m.coef = step_coefficient(h, m, static_cast<float>(sqrt(u_sq)));
  }
}

// ---- update: one thread per group of four weights -----------------------------------------------
// Four consecutive elements in one load: 16 bytes for fp32, 8 for bf16, when the base pointers
// allow it (they do for whole allocations; a view into a flat buffer may not).
__device__ __forceinline__ void load4(const void* base, ScalarType t, int64_t e, bool vec, int64_t total,
                                      float (&v)[4]) {
  if (vec) {
    if (t == ScalarType::kBFloat16) {
      const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(base) + e);
      const __nv_bfloat16* b = reinterpret_cast<const __nv_bfloat16*>(&raw);
#pragma unroll
      for (int k = 0; k < 4; ++k) v[k] = __bfloat162float(b[k]);
    } else {
      const float4 raw = *reinterpret_cast<const float4*>(static_cast<const float*>(base) + e);
      v[0] = raw.x, v[1] = raw.y, v[2] = raw.z, v[3] = raw.w;
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = e + k < total ? load(base, t, e + k) : 0.f;
}

__global__ void __launch_bounds__(kThreads) update_kernel(Hyper h, MatrixTable table) {
  const Matrix& m = table.m[blockIdx.y];
  const int64_t total = m.rows * m.cols;
  const int64_t group = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t e0 = 4 * group;
  if (e0 >= total) return;
  const bool bf16 = m.type == ScalarType::kBFloat16;
  const uintptr_t align = bf16 ? 8 : 16;
  const bool vec =
      e0 + 4 <= total && (reinterpret_cast<uintptr_t>(m.w) | reinterpret_cast<uintptr_t>(m.g)) % align == 0;
  float w[4], g[4];
  load4(m.w, m.type, e0, vec, total, w);
  load4(m.g, m.type, e0, vec, total, g);
  const float coef = *m.coef;
  random::U32x4 words{};
  if (bf16 && h.stochastic_rounding)
    words = random::random_words(h.seed, random::Domain::kRounding, m.stream, static_cast<uint32_t>(m.step),
                                 static_cast<uint32_t>(group));
  const uint32_t word[4] = {words.x, words.y, words.z, words.w};
  float x[4];
  uint16_t bits[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t e = e0 + k;
    const int64_t channel = m.transposed() ? e % m.cols : e / m.cols;
    const float s = h.tensor_scale ? m.rt_sq[0] : m.rt_sq[e < total ? channel : 0];
    x[k] = updated_weight(h, w[k], g[k], mul(coef, s));
    bits[k] = bf16 ? to_bf16_bits(x[k], h.stochastic_rounding, word[k] >> 16) : 0;
  }
  if (vec) {
    if (bf16) {
      uint2 raw;
      raw.x = static_cast<uint32_t>(bits[0]) | (static_cast<uint32_t>(bits[1]) << 16);
      raw.y = static_cast<uint32_t>(bits[2]) | (static_cast<uint32_t>(bits[3]) << 16);
      *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(m.w) + e0) = raw;
    } else {
      *reinterpret_cast<float4*>(static_cast<float*>(m.w) + e0) = make_float4(x[0], x[1], x[2], x[3]);
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (e0 + k >= total) break;
    if (bf16) {
      static_cast<__nv_bfloat16*>(m.w)[e0 + k] = __ushort_as_bfloat16(bits[k]);
    } else {
      static_cast<float*>(m.w)[e0 + k] = x[k];
    }
  }
}

template <typename Table, typename Item>
Table make_table(const Item* items, int count) {
  Table t{};
  for (int i = 0; i < count; ++i) t.m[i] = items[i];
  t.count = count;
  return t;
}

// Calls f(table, count) for consecutive slices of at most kTable matrices.
template <typename F>
void for_tables(const Matrix* mats, int count, F&& f) {
  for (int i0 = 0; i0 < count; i0 += kTable) {
    const int n = std::min(kTable, count - i0);
    f(make_table<MatrixTable>(mats + i0, n), n);
  }
}

unsigned grid_x(int64_t work, int64_t per_block) {
  return static_cast<unsigned>(std::max<int64_t>(1, ceil_div(work, per_block)));
}

}  // namespace

void projection_cuda(const Projection* projs, int count, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  for (int i0 = 0; i0 < count; i0 += kTable) {
    const int n = std::min(kTable, count - i0);
    ProjectionTable t{};
    int64_t most = 0;
    for (int i = 0; i < n; ++i) {
      t.p[i] = projs[i0 + i];
      most = std::max(most, ceil_div(t.p[i].rank * t.p[i].dim, 4));
    }
    t.count = n;
    projection_kernel<<<dim3(grid_x(most, kThreads), n), kThreads, 0, s>>>(t, inv_sqrt_rank(t.p[0].rank));
    check(cudaGetLastError(), "projection_kernel launch");
  }
}

void channel_sumsq_cuda(const Matrix* mats, int count, void* stream) {
  for_tables(mats, count, [&](const MatrixTable& t, int n) {
    int64_t most = 0;
    for (int i = 0; i < n; ++i)
      most = std::max(most, t.m[i].transposed() ? ceil_div(t.m[i].cols, 32) : ceil_div(t.m[i].rows, kWarps));
    channel_sumsq_kernel<<<dim3(grid_x(most, 1), n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(t);
    check(cudaGetLastError(), "channel_sumsq_kernel launch");
  });
}

void moments_cuda(const Hyper& h, const Matrix* mats, int count, void* stream) {
  for_tables(mats, count, [&](const MatrixTable& t, int n) {
    int64_t most = 0;
    for (int i = 0; i < n; ++i) most = std::max(most, t.m[i].long_dim());
    moments_kernel<<<dim3(grid_x(most, kWarps), n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(h, t);
    check(cudaGetLastError(), "moments_kernel launch");
  });
}

void finalize_cuda(const Hyper& h, const Matrix* mats, int count, void* stream) {
  for_tables(mats, count, [&](const MatrixTable& t, int n) {
    finalize_kernel<<<n, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(h, t);
    check(cudaGetLastError(), "finalize_kernel launch");
  });
}

void update_cuda(const Hyper& h, const Matrix* mats, int count, void* stream) {
  for_tables(mats, count, [&](const MatrixTable& t, int n) {
    int64_t most = 0;
    for (int i = 0; i < n; ++i) most = std::max(most, ceil_div(t.m[i].rows * t.m[i].cols, 4));
    update_kernel<<<dim3(grid_x(most, kThreads), n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(h, t);
    check(cudaGetLastError(), "update_kernel launch");
  });
}

}  // namespace ember::apollo
