// sparse family: the mask formats, shared by every kernel that reads them. Torch-free.
//
// Bitmask (unstructured): int32 words, row-major (rows, ceil(cols/32)); bit (j % 32) of word
//   (i, j / 32) is mask[i][j] (bit 31 is the word's sign bit: words are bit patterns).
// Block mask: one byte per block×block tile, row-major (ceil(rows/b), ceil(cols/b)); 1 = kept. A
//   tile at the right or bottom edge covers what is left of the matrix.
#pragma once

#include <cstdint>

#include "ember/common.h"

namespace ember::sparse {

constexpr int kWordBits = 32;

EMBER_HOST_DEVICE constexpr bool supported_block(int64_t block) {
  return block == 16 || block == 32 || block == 64 || block == 128;
}

EMBER_HOST_DEVICE constexpr int64_t words_per_row(int64_t cols) { return ceil_div(cols, kWordBits); }

EMBER_HOST_DEVICE bool bit_at(const int32_t* words, int64_t cols, int64_t i, int64_t j) {
  const uint32_t w = static_cast<uint32_t>(words[i * words_per_row(cols) + j / kWordBits]);
  return (w >> (j % kWordBits)) & 1u;
}

// dst = src ⊙ M for a bitmask M: kept elements copied bit for bit, pruned ones +0 (a pruned
// weight is exactly zero, whatever src holds there, inf and NaN included). dst may be src.
// Elements are 1, 2, 4 or 8 bytes (any float dtype): the op moves bits, it does no arithmetic.
// A rows × cols block of row-major matrices (leading dimensions src_ld, dst_ld in elements,
// words_ld in words): column j of the block is bit j % 32 of word j / 32 of its row of `words`,
// so a block that starts at a column c0 of the weight has c0 % 32 == 0 and words at c0 / 32.
struct BitmaskParams {
  const void* src = nullptr;
  void* dst = nullptr;
  int element_bytes = 4;  // 1, 2, 4 or 8
  int64_t rows = 0, cols = 0;
  const int32_t* words = nullptr;
  int64_t src_ld = 0, dst_ld = 0, words_ld = 0;
};

// The element of one row: bit j of the row's words selects src[j] or 0.
template <typename Bits>
EMBER_HOST_DEVICE Bits masked_bits(Bits src, uint32_t word, int64_t j) {
  return ((word >> (j % kWordBits)) & 1u) ? src : Bits(0);
}

void apply_bitmask_cpu(const BitmaskParams& p, void* stream = nullptr);  // stream: unused
void apply_bitmask_cuda(const BitmaskParams& p, void* stream);

}  // namespace ember::sparse
