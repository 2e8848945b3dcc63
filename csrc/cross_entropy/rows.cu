// CUDA row kernels of the cross-entropy: the math of include/ember/cross_entropy.h, one CTA per
// row. The forward keeps an online log-sum-exp per thread over a strided slice of the row and
// merges the threads' statistics in shared memory; the backward recomputes p from the saved lse
// and writes the gradient (in place when grad is the logits buffer). A forward given a gradient
// buffer writes the gradient too, right after the row's lse (the row is then in L2).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "ember/cross_entropy.h"

namespace ember::ce {
namespace {

constexpr int kThreads = kRowThreads;

__device__ __forceinline__ float load(const void* p, ScalarType t, int64_t i) {
  switch (t) {
    case ScalarType::kBFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ScalarType::kFloat16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store(void* p, ScalarType t, int64_t i, float v) {
  switch (t) {
    case ScalarType::kBFloat16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case ScalarType::kFloat16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// Row i's gradient, each element read and written by the same thread (in place is safe).
__device__ void write_grad(const RowsParams& p, int64_t i, LseParts lse) {
  const int64_t base = row_start(i, p.ld), out = row_start(i, p.grad_ld);
  const float scale =
      ignored(p, i) ? 0.f : row_scale(p.grad_rows[i * p.grad_rows_stride], p.weight ? p.weight[i] : 1.f);
  const int64_t y = p.target[i];
  for (int64_t j = threadIdx.x; j < p.vocab; j += kThreads) {
    const float g =
        scale == 0.f ? 0.f : grad_logit(p.opt, load(p.logits, p.type, base + j), j == y, lse, p.vocab, scale);
    store(p.grad, p.grad_type, out + j, g);
  }
}

__global__ void __launch_bounds__(kThreads) forward_kernel(RowsParams p) {
  __shared__ RowStats part[kThreads / 32];
  const int64_t i = blockIdx.x;
  const int64_t base = row_start(i, p.ld);
  RowStats s;
  for (int64_t j = threadIdx.x; j < p.vocab; j += kThreads)
    s.add(softcapped(load(p.logits, p.type, base + j), p.opt.softcap));
  // warp, then block merge (fixed order)
  for (int off = 16; off > 0; off >>= 1) {
    RowStats o;
    o.max = __shfl_xor_sync(0xffffffffu, s.max, off);
    o.sum = __shfl_xor_sync(0xffffffffu, s.sum, off);
    o.sum_pd = __shfl_xor_sync(0xffffffffu, s.sum_pd, off);
    o.sum_z = __shfl_xor_sync(0xffffffffu, s.sum_z, off);
    s.merge(o);
  }
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
  __syncthreads();
  __shared__ LseParts row_lse;
  if (threadIdx.x == 0) {
    const RowStats t = merge_warps(part, 1);
    const double lse = t.lse_exact();
    row_lse = split_lse(lse);
    p.lse[i] = lse;
    const bool ign = ignored(p, i);
    const float zy = ign ? 0.f : softcapped(load(p.logits, p.type, base + p.target[i]), p.opt.softcap);
    p.loss[i] = ign ? 0.f : row_loss(p.opt, t, zy, p.vocab, p.weight ? p.weight[i] : 1.f);
    if (p.logprob) p.logprob[i] = ign ? 0.f : t.minus_lse(zy);
    if (p.entropy) p.entropy[i] = ign ? 0.f : t.entropy();
  }
  if (p.grad == nullptr) return;
  __syncthreads();  // row_lse, and every read of the row done before an in-place write
  write_grad(p, i, row_lse);
}

__global__ void __launch_bounds__(kThreads) backward_kernel(RowsParams p) {
  write_grad(p, blockIdx.x, split_lse(p.lse[blockIdx.x]));
}

void check(cudaError_t err, const char* what) { cuda_check(err, "ember cross_entropy", what); }

}  // namespace

void rows_forward_cuda(const RowsParams& p, void* stream) {
  if (p.rows == 0) return;
  forward_kernel<<<static_cast<unsigned>(p.rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  check(cudaGetLastError(), "forward_kernel launch");
}

void rows_backward_cuda(const RowsParams& p, void* stream) {
  if (p.rows == 0) return;
  backward_kernel<<<static_cast<unsigned>(p.rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  check(cudaGetLastError(), "backward_kernel launch");
}

}  // namespace ember::ce
