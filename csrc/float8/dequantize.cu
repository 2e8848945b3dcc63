// CUDA dequantize of an fp8 operand into fp32 (the GPU's fallback for GEMMs no CUTLASS kernel
// covers): one thread per 4 elements, the same dequantized() as the CPU path.
#include "cuda_check.h"
#include "ember/float8_gemm.h"

namespace ember::float8 {
namespace {

__global__ void dequantize_kernel(DequantizeParams p) {
  const int64_t n = p.rows * p.cols;
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 4; i < n;
       i += int64_t(gridDim.x) * blockDim.x * 4) {
    for (int64_t j = i; j < i + 4 && j < n; ++j) {
      const int64_t r = j / p.cols, c = j - r * p.cols;
      p.out[j] = dequantized(p.q[j], p.format, p.scale, p.groups, r, c);
    }
  }
}

}  // namespace

void dequantize_cuda(const DequantizeParams& p, void* stream) {
  const int64_t n = p.rows * p.cols;
  if (n == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>(ceil_div(n, 4 * threads), 65535 * 8);
  dequantize_kernel<<<int(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  cuda_check(cudaGetLastError(), "ember.fp8_gemm", "dequantize_kernel launch");
}

}  // namespace ember::float8
