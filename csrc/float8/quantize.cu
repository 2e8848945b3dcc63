// CUDA kernels of quantize_fp8: the math of include/ember/fp8.h over groups of y (= x or xᵀ).
//
// A CTA owns a 128×128 region of y. It stages the region in shared memory as fp32, reading x
// coalesced along x's contiguous dimension whether or not y is transposed, then writes q
// row-major in 4-byte packs. Block and tile groups fit inside a region, so their amax and cast
// are one fused kernel. Tensor and row groups span regions: one launch of the same kernel
// reduces each region's maxima into a global workspace (atomicMax on the float bits, which
// orders non-negative floats and ranks NaN above inf), a second casts. A row split across CTAs
// keeps every SM busy where one CTA per row band would leave most idle for M < 16k.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cuda_check.h"
#include "ember/float8.h"

namespace ember::float8 {
namespace {

constexpr int kRegion = 128;          // y rows and cols per CTA
constexpr int kStride = kRegion + 1;  // padded row of the staged region (bank spread)
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxGroupsPerRow = kRegion / 16;  // smallest supported block is 16

enum class Phase { kFused, kAmax, kCast };

struct Args {
  const void* x;
  int64_t x_cols;      // leading dimension of x
  int64_t rows, cols;  // of y
  bool transpose;
  bool vec4;  // x rows hold whole, aligned 4-element packs
  fp8::Format format;
  int block;
  uint8_t* q;
  float* scale;
  int64_t scale_cols;
  float* workspace;
};

struct Smem {
  float y[kRegion][kStride];
  float group_amax[kRegion][kMaxGroupsPerRow];  // block/tile: per (row, column group)
  float group_inv[kRegion][kMaxGroupsPerRow];   // block/tile: 1/scale per (row, column group)
  float row_inv[kRegion];                       // row: 1/scale, from the workspace's amax
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct Pack4 {  // four elements in one load: 16 bytes for fp32, 8 for 16-bit types
  using type = typename std::conditional<sizeof(T) == 4, float4, uint2>::type;
};

template <typename T>
__device__ __forceinline__ void load4(const T* p, float (&v)[4]) {
  const auto raw = *reinterpret_cast<const typename Pack4<T>::type*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = to_float(e[j]);
}

__device__ __forceinline__ float warp_amax(float m, int width) {
  for (int off = width / 2; off > 0; off >>= 1) m = fp8::amax_combine(m, __shfl_xor_sync(0xffffffffu, m, off));
  return m;
}

__device__ __forceinline__ void atomic_amax(float* addr, float m) {
  // fp8::abs_bits orders |m| as unsigned integers, NaN above inf.
  atomicMax(reinterpret_cast<unsigned int*>(addr), fp8::abs_bits(m));
}

// Quad i of a region (4 consecutive elements along x's contiguous dimension): 8 consecutive
// lanes take 8 consecutive quads of one row (32 contiguous elements: whole sectors) and a warp
// spans 4 rows. With the 129-float pitch the 32 lanes then hit 32 different banks whether a quad
// is stored along a row of y (x as is) or down a column (xᵀ), and again when the cast reads it.
__device__ __forceinline__ void quad_coords(int i, int& row, int& col) {
  const int lane = i % 32, w = i / 32;
  row = (w / 4) * 4 + lane / 8;
  col = ((w % 4) * 8 + lane % 8) * 4;
}

constexpr int kQuadsPerThread = kRegion * kRegion / 4 / kThreads;

// Stage y[r0:r0+128, c0:c0+128] (zeros outside y: they never raise an amax) into s.y, reading x
// coalesced along its contiguous dimension whether or not y is transposed.
template <typename T>
__device__ void load_region(const Args& a, Smem& s, int64_t r0, int64_t c0) {
  const T* x = static_cast<const T*>(a.x);
  // `slow` indexes x's rows, `fast` its contiguous dimension.
  const int64_t slow0 = a.transpose ? c0 : r0, fast0 = a.transpose ? r0 : c0;
  const int64_t slow_n = a.transpose ? a.cols : a.rows, fast_n = a.transpose ? a.rows : a.cols;
  auto store = [&](int slow, int fast, const float (&v)[4]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (a.transpose) {
        s.y[fast + j][slow] = v[j];
      } else {
        s.y[slow][fast + j] = v[j];
      }
    }
  };
  if (a.vec4 && slow0 + kRegion <= slow_n && fast0 + kRegion <= fast_n) {
    // Interior region: every load in flight before the first store.
    float v[kQuadsPerThread][4];
#pragma unroll
    for (int k = 0; k < kQuadsPerThread; ++k) {
      int slow, fast;
      quad_coords(threadIdx.x + k * kThreads, slow, fast);
      load4(x + (slow0 + slow) * a.x_cols + fast0 + fast, v[k]);
    }
#pragma unroll
    for (int k = 0; k < kQuadsPerThread; ++k) {
      int slow, fast;
      quad_coords(threadIdx.x + k * kThreads, slow, fast);
      store(slow, fast, v[k]);
    }
    return;
  }
  for (int i = threadIdx.x; i < kRegion * kRegion / 4; i += kThreads) {  // edges, unaligned x
    int slow, fast;
    quad_coords(i, slow, fast);
    const int64_t gs = slow0 + slow, gf = fast0 + fast;
    float v[4] = {0.f, 0.f, 0.f, 0.f};
    if (gs < slow_n) {
      const T* p = x + gs * a.x_cols + gf;
      if (a.vec4 && gf + 4 <= fast_n) {
        load4(p, v);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (gf + j < fast_n) v[j] = to_float(p[j]);
      }
    }
    store(slow, fast, v);
  }
}

// Lane `lane` of the warp owning row r holds |y[r, lane + 32k]|, k = 0..3. Reduce within
// column groups of `block` and leave the maxima in s.group_amax[r][*].
__device__ void row_group_amax(const Args& a, Smem& s, int r, int lane) {
  float m[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) m[k] = warp_amax(fabsf(s.y[r][lane + 32 * k]), a.block < 32 ? a.block : 32);
  if (a.block <= 32) {
    if (lane % a.block == 0) {
#pragma unroll
      for (int k = 0; k < 4; ++k) s.group_amax[r][(lane + 32 * k) / a.block] = m[k];
    }
  } else if (lane == 0) {  // 64 or 128 columns: fold the 32-wide partial maxima (constant indices keep m in registers)
    const float lo = fp8::amax_combine(m[0], m[1]), hi = fp8::amax_combine(m[2], m[3]);
    if (a.block == 64) {
      s.group_amax[r][0] = lo;
      s.group_amax[r][1] = hi;
    } else {
      s.group_amax[r][0] = fp8::amax_combine(lo, hi);
    }
  }
}

// The factor y[r, c] is multiplied by before encoding (one division per group, not per value).
template <Granularity G>
__device__ float inv_scale_at(const Smem& s, float tensor_inv, int r, int c, int block) {
  if constexpr (G == Granularity::kTensor) return tensor_inv;
  if constexpr (G == Granularity::kRow) return s.row_inv[r];
  return s.group_inv[r][c / block];
}

template <typename T, Granularity G, Phase P>
__global__ void __launch_bounds__(kThreads) quantize_region_kernel(Args a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& s = *reinterpret_cast<Smem*>(smem_raw);
  const int64_t region_cols = ceil_div(a.cols, kRegion);
  const int64_t r0 = (blockIdx.x / region_cols) * kRegion, c0 = (blockIdx.x % region_cols) * kRegion;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  load_region<T>(a, s, r0, c0);
  __syncthreads();

  if constexpr (P == Phase::kAmax) {
    // Tensor and row: fold this region's maxima into the workspace.
    float tensor_m = 0.f;
    for (int r = warp; r < kRegion; r += kWarps) {
      float m = 0.f;
#pragma unroll
      for (int k = 0; k < 4; ++k) m = fp8::amax_combine(m, fabsf(s.y[r][lane + 32 * k]));
      m = warp_amax(m, 32);
      if constexpr (G == Granularity::kRow) {
        if (lane == 0 && r0 + r < a.rows) atomic_amax(a.workspace + r0 + r, m);
      } else {
        tensor_m = fp8::amax_combine(tensor_m, m);
      }
    }
    if constexpr (G == Granularity::kTensor) {
      if (lane == 0) atomic_amax(a.workspace, tensor_m);
    }
    return;
  } else {
    float tensor_inv = 1.f;
    if constexpr (G == Granularity::kTensor) {
      const float m = a.workspace[0];
      tensor_inv = fp8::inv_scale_from_amax(m, a.format);
      if (blockIdx.x == 0 && threadIdx.x == 0) a.scale[0] = fp8::scale_from_amax(m, a.format);
    } else if constexpr (G == Granularity::kRow) {
      for (int r = threadIdx.x; r < kRegion; r += kThreads) {
        const float m = r0 + r < a.rows ? a.workspace[r0 + r] : 0.f;
        s.row_inv[r] = fp8::inv_scale_from_amax(m, a.format);
        if (c0 == 0 && r0 + r < a.rows) a.scale[r0 + r] = fp8::scale_from_amax(m, a.format);
      }
      __syncthreads();
    } else {
      for (int r = warp; r < kRegion; r += kWarps) row_group_amax(a, s, r, lane);
      __syncthreads();
      const int groups = kRegion / a.block;  // per region row / column
      if constexpr (G == Granularity::kTile) {
        // Fold each tile's `block` rows into its first row, then spread 1/scale over the tile.
        for (int t = threadIdx.x; t < groups * groups; t += kThreads) {
          const int rb = t / groups, cb = t % groups;
          float m = 0.f;
          for (int r = rb * a.block; r < (rb + 1) * a.block; ++r) m = fp8::amax_combine(m, s.group_amax[r][cb]);
          s.group_amax[rb * a.block][cb] = m;
          if (r0 + rb * a.block < a.rows && c0 + cb * a.block < a.cols)
            a.scale[((r0 / a.block) + rb) * a.scale_cols + c0 / a.block + cb] = fp8::scale_from_amax(m, a.format);
        }
        __syncthreads();
        for (int t = threadIdx.x; t < kRegion * groups; t += kThreads) {
          const int r = t / groups, cb = t % groups;
          s.group_inv[r][cb] = fp8::inv_scale_from_amax(s.group_amax[r - r % a.block][cb], a.format);
        }
        __syncthreads();
      } else {
        for (int t = threadIdx.x; t < kRegion * groups; t += kThreads) {
          const int r = t / groups, cb = t % groups;
          const float m = s.group_amax[r][cb];
          s.group_inv[r][cb] = fp8::inv_scale_from_amax(m, a.format);
          if (r0 + r < a.rows && c0 + cb * a.block < a.cols)
            a.scale[(r0 + r) * a.scale_cols + c0 / a.block + cb] = fp8::scale_from_amax(m, a.format);
        }
        __syncthreads();
      }
    }

    // Cast: each thread packs a quad, 4 consecutive columns of a row (one group: block >= 16).
    const bool pack_ok = a.cols % 4 == 0;
    for (int i = threadIdx.x; i < kRegion * kRegion / 4; i += kThreads) {
      int r, c;
      quad_coords(i, r, c);
      const int64_t gr = r0 + r, gc = c0 + c;
      if (gr >= a.rows || gc >= a.cols) continue;
      const float inv = inv_scale_at<G>(s, tensor_inv, r, c, a.block);
      uint8_t* out = a.q + gr * a.cols + gc;
      if (pack_ok) {  // gc + 4 <= cols follows from cols % 4 == 0
        uint32_t packed = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) packed |= uint32_t(fp8::quantize(s.y[r][c + j], inv, a.format)) << (8 * j);
        *reinterpret_cast<uint32_t*>(out) = packed;
      } else {
        for (int j = 0; j < 4 && gc + j < a.cols; ++j) out[j] = fp8::quantize(s.y[r][c + j], inv, a.format);
      }
    }
  }
}

__global__ void fill_kernel(float* p, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

void check(cudaError_t err, const char* what) { cuda_check(err, "ember.quantize_fp8", what); }

template <typename T, Granularity G, Phase P>
void launch(const Args& a, int64_t regions, cudaStream_t stream) {
  auto kernel = quantize_region_kernel<T, G, P>;
  // More than 48 KB of dynamic shared memory needs an opt-in, once per kernel and device.
  static std::atomic<uint64_t> opted_in{0};
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  const uint64_t bit = uint64_t(1) << (device % 64);
  if (!(opted_in.load(std::memory_order_relaxed) & bit)) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(Smem)),
          "cudaFuncSetAttribute");
    opted_in.fetch_or(bit, std::memory_order_relaxed);
  }
  kernel<<<static_cast<unsigned>(regions), kThreads, sizeof(Smem), stream>>>(a);
  check(cudaGetLastError(), "kernel launch");
}

template <typename T, Granularity G>
void run(const QuantizeParams& p, const Args& a, cudaStream_t stream) {
  const int64_t regions = ceil_div(a.rows, kRegion) * ceil_div(a.cols, kRegion);
  if constexpr (G == Granularity::kTensor || G == Granularity::kRow) {
    check(cudaMemsetAsync(p.workspace, 0, p.workspace_floats() * sizeof(float), stream), "cudaMemsetAsync");
    launch<T, G, Phase::kAmax>(a, regions, stream);
    launch<T, G, Phase::kCast>(a, regions, stream);
  } else {
    launch<T, G, Phase::kFused>(a, regions, stream);
  }
}

template <typename T>
void run_typed(const QuantizeParams& p, const Args& a, cudaStream_t stream) {
  switch (p.granularity) {
    case Granularity::kTensor: return run<T, Granularity::kTensor>(p, a, stream);
    case Granularity::kRow: return run<T, Granularity::kRow>(p, a, stream);
    case Granularity::kBlock: return run<T, Granularity::kBlock>(p, a, stream);
    case Granularity::kTile: return run<T, Granularity::kTile>(p, a, stream);
  }
}

}  // namespace

void quantize_cuda(const QuantizeParams& p, void* stream_ptr) {
  const auto stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t rows = p.y_rows(), cols = p.y_cols();
  const int64_t n_scale = p.scale_rows() * p.scale_cols();
  if (rows == 0 || cols == 0) {  // nothing to read: every group is empty, amax 0, scale 1
    if (n_scale > 0) {
      fill_kernel<<<static_cast<unsigned>(ceil_div(n_scale, 256) < 1024 ? ceil_div(n_scale, 256) : 1024), 256, 0,
                    stream>>>(p.scale, n_scale, 1.0f);
      check(cudaGetLastError(), "kernel launch");
    }
    return;
  }
  const size_t elem = p.x_type == ScalarType::kFloat32 ? 4 : 2;
  Args a{};
  a.x = p.x;
  a.x_cols = p.x_cols;
  a.rows = rows;
  a.cols = cols;
  a.transpose = p.transpose;
  a.vec4 = p.x_cols % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % (4 * elem) == 0;
  a.format = p.format;
  a.block = p.block;
  a.q = p.q;
  a.scale = p.scale;
  a.scale_cols = p.scale_cols();
  a.workspace = p.workspace;
  dispatch_float<float, __half, __nv_bfloat16>(p.x_type,
                                               [&](auto t) { run_typed<typename decltype(t)::type>(p, a, stream); });
}

}  // namespace ember::float8
