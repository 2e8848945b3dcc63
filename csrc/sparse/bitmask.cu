// CUDA kernel of the bitmask apply (include/ember/sparse.h): a thread per element, so a warp's
// loads and stores are coalesced and its 32 lanes share one or two mask words; the same
// masked_bits as the CPU.
#include "cuda_check.h"
#include "ember/sparse.h"

namespace ember::sparse {
namespace {

template <typename Bits>
__global__ void apply_bitmask_kernel(BitmaskParams p) {
  const int64_t n = p.rows * p.cols;
  const Bits* src = static_cast<const Bits*>(p.src);
  Bits* dst = static_cast<Bits*>(p.dst);
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / p.cols, j = t - r * p.cols;
    dst[r * p.dst_ld + j] =
        masked_bits(src[r * p.src_ld + j], static_cast<uint32_t>(p.words[r * p.words_ld + j / kWordBits]), j);
  }
}

}  // namespace

void apply_bitmask_cuda(const BitmaskParams& p, void* stream) {
  const int64_t n = p.rows * p.cols;
  if (n == 0) return;
  const int threads = 256;
  const int blocks = int(std::min<int64_t>(ceil_div(n, threads), 65535 * 8));
  auto s = static_cast<cudaStream_t>(stream);
  switch (p.element_bytes) {
    case 1: apply_bitmask_kernel<uint8_t><<<blocks, threads, 0, s>>>(p); break;
    case 2: apply_bitmask_kernel<uint16_t><<<blocks, threads, 0, s>>>(p); break;
    case 4: apply_bitmask_kernel<uint32_t><<<blocks, threads, 0, s>>>(p); break;
    default: apply_bitmask_kernel<uint64_t><<<blocks, threads, 0, s>>>(p); break;
  }
  cuda_check(cudaGetLastError(), "ember.masked_linear", "apply_bitmask_kernel launch");
}

}  // namespace ember::sparse
