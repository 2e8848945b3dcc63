// See schedule.h.
#include "schedule.h"

#include <algorithm>

namespace ember::sparse {

Waves schedule(GroupedKind kind, const uint8_t* tiles, int64_t rows, int64_t cols, int64_t block) {
  const int64_t tr = (rows + block - 1) / block, tc = (cols + block - 1) / block;
  const bool by_column = kind == GroupedKind::kDgrad;
  const int64_t lines = by_column ? tc : tr, along = by_column ? tr : tc;
  const auto kept = [&](int64_t line, int64_t i) {
    return by_column ? tiles[i * tc + line] != 0 : tiles[line * tc + i] != 0;
  };
  Waves waves;
  for (int64_t line = 0; line < lines; ++line) {
    size_t nth = 0;  // this line's run count so far: its next run goes to wave nth
    for (int64_t i = 0; i < along;) {
      if (!kept(line, i)) {
        ++i;
        continue;
      }
      int64_t j = i + 1;
      while (j < along && kept(line, j)) ++j;
      const int64_t l0 = line * block, l1 = std::min(by_column ? cols : rows, l0 + block);
      const int64_t a0 = i * block, a1 = std::min(by_column ? rows : cols, j * block);
      const Tile t = by_column ? Tile{a0, a1, l0, l1} : Tile{l0, l1, a0, a1};
      const size_t wave = kind == GroupedKind::kWgrad ? 0 : nth++;
      if (waves.size() <= wave) waves.resize(wave + 1);
      waves[wave].push_back(t);
      i = j;
    }
  }
  return waves;
}

}  // namespace ember::sparse
