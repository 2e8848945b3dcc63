// A test hook: the kernels' index math at sizes past 2^31 elements, without allocating them. It
// calls the same functions the kernels address memory with (row starts of the cross-entropy rows,
// fp8 scale groups, the block-sparse GEMM schedule), so a 32-bit product there shows as a wrong
// value in tests/test_index_math.py.
#include "index_math.h"

#include <c10/util/Exception.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "sparse/schedule.h"
#include "ember/cross_entropy.h"
#include "ember/float8_gemm.h"

namespace ember::bindings {

std::map<std::string, int64_t> index_math(int64_t tokens, int64_t vocab, int64_t dim, int64_t block) {
  // at least one row, column and tile: the results are the last ones (and a block of 0 divides by 0)
  for (const auto& [name, value] : {std::pair{"tokens", tokens}, {"vocab", vocab}, {"dim", dim}, {"block", block}})
    TORCH_CHECK(value >= 1, "ember._C._index_math: ", name, " must be >= 1, got ", value);
  std::map<std::string, int64_t> out;
  out["ce_last_row_start"] = ce::row_start(tokens - 1, vocab);
  const auto a = float8::scale_groups(float8::GemmRecipe::kBlockwise, false, tokens, vocab);
  out["fp8_blockwise_last_scale"] = a.index(tokens - 1, vocab - 1);
  // A block mask of a vocab × dim weight with every tile kept: the weight-gradient schedule's last
  // tile, and its largest element offset into a row-major weight.
  const std::vector<uint8_t> tiles(ceil_div(vocab, block) * ceil_div(dim, block), 1);
  const auto waves = sparse::schedule(sparse::GroupedKind::kWgrad, tiles.data(), vocab, dim, block);
  TORCH_CHECK(!waves.empty() && !waves.back().empty(), "ember._C._index_math: the schedule has no tile");
  const sparse::Tile last = waves.back().back();
  out["sparse_wgrad_last_r1"] = last.r1;
  out["sparse_wgrad_last_c1"] = last.c1;
  out["sparse_wgrad_last_offset"] = (last.r1 - 1) * dim + (last.c1 - 1);
  return out;
}

}  // namespace ember::bindings
