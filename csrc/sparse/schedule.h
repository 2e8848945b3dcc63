// sparse family: which dense GEMMs a block mask turns each matmul into, and in how many waves.
// A run is a maximal stretch of consecutive kept tiles (along a tile row, or a tile column); one
// GEMM per run keeps the dense case at full-size GEMMs. Runs of one wave write disjoint output
// regions, so a wave is one grouped launch on the GPU (include/ember/sparse_grouped.h); the CPU runs the
// same waves GEMM by GEMM. Torch-free.
//   forward  y[:, r0:r1]    += x[:, c0:c1] · W[r0:r1, c0:c1]ᵀ   wave l: the l-th run of each tile row
//   dgrad    dX[:, c0:c1]   += dY[:, r0:r1] · W[r0:r1, c0:c1]   wave l: the l-th run of each tile column
//   wgrad    dW[r0:r1, c0:c1] = dY[:, r0:r1]ᵀ · x[:, c0:c1]     one wave: every row run (sampled dW)
#pragma once

#include <cstdint>
#include <vector>

#include "ember/sparse_grouped.h"

namespace ember::sparse {

struct Tile {
  int64_t r0, r1, c0, c1;  // element ranges of the weight
};

using Waves = std::vector<std::vector<Tile>>;

// tiles: the block mask's bytes (row-major, ceil(rows/block) × ceil(cols/block), nonzero = kept).
Waves schedule(GroupedKind kind, const uint8_t* tiles, int64_t rows, int64_t cols, int64_t block);

}  // namespace ember::sparse
