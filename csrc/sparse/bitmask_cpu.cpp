// CPU kernel of the bitmask apply (include/ember/sparse.h): one pass over the block's rows, a mask
// word per 32 elements, no temporaries.
#include <ATen/Parallel.h>

#include <algorithm>

#include "ember/sparse.h"

namespace ember::sparse {
namespace {

template <typename Bits>
void apply_rows(const BitmaskParams& p) {
  const int64_t cols = p.cols, wpr = words_per_row(cols);
  at::parallel_for(0, p.rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const Bits* src = static_cast<const Bits*>(p.src) + r * p.src_ld;
      Bits* dst = static_cast<Bits*>(p.dst) + r * p.dst_ld;
      for (int64_t w = 0; w < wpr; ++w) {
        const uint32_t word = static_cast<uint32_t>(p.words[r * p.words_ld + w]);
        const int64_t c0 = w * kWordBits, c1 = std::min(cols, c0 + kWordBits);
        for (int64_t j = c0; j < c1; ++j) dst[j] = masked_bits(src[j], word, j);
      }
    }
  });
}

}  // namespace

void apply_bitmask_cpu(const BitmaskParams& p, void*) {
  switch (p.element_bytes) {
    case 1: return apply_rows<uint8_t>(p);
    case 2: return apply_rows<uint16_t>(p);
    case 4: return apply_rows<uint32_t>(p);
    default: return apply_rows<uint64_t>(p);
  }
}

}  // namespace ember::sparse
