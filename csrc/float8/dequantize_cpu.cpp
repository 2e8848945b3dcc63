// CPU dequantize of an fp8 operand into fp32 with its scales (include/ember/float8_gemm.h): the
// first half of the emulated fp8 GEMM. A 256-entry table per format holds fp8::decode, so the
// inner loop over a group's columns is one load, one table lookup and one multiply.
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>

#include "ember/float8_gemm.h"

namespace ember::float8 {
namespace {

std::array<float, 256> decode_table(fp8::Format f) {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = fp8::decode(uint8_t(c), f);
  return t;
}

}  // namespace

void dequantize_cpu(const DequantizeParams& p, void*) {
  static const std::array<float, 256> kE4M3 = decode_table(fp8::Format::kE4M3);
  static const std::array<float, 256> kE5M2 = decode_table(fp8::Format::kE5M2);
  const float* table = (p.format == fp8::Format::kE4M3 ? kE4M3 : kE5M2).data();
  const int64_t cols = p.cols, step = std::max<int64_t>(p.groups.group_cols, 1);
  at::parallel_for(0, p.rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* q = p.q + r * cols;
      float* out = p.out + r * cols;
      for (int64_t c0 = 0; c0 < cols; c0 += step) {  // one scale per group: q · scale as dequantized()
        const float s = p.scale[p.groups.index(r, c0)];
        const int64_t c1 = std::min(cols, c0 + step);
        for (int64_t c = c0; c < c1; ++c) out[c] = table[q[c]] * s;
      }
    }
  });
}

}  // namespace ember::float8
