// sparse family, first version: mask packing and masked_linear written with ATen, so one
// implementation serves the CPU and (through cuBLAS) CUDA. Block masks skip the empty tiles in
// the forward, dX and dW with one GEMM per kept tile (dW is sampled: only kept tiles are computed
// and stored); bitmasks apply the mask with the device's bitmask kernel (one pass, no temporaries
// beyond the result) to a transient W⊙M copy (forward, dX) and in place to dYᵀ·X (dW).
// Hand-written GEMMs (the mask applied while loading W tiles, tile lists on tensor cores) are
// the next step; the formats (include/ember/sparse.h) are theirs already.
#include "masked.h"

namespace ember::sparse {
namespace {

// dst = src ⊙ M (dst may be src), src and dst contiguous, of the weight's shape.
void apply_bitmask(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& words, const BitmaskKernel& k) {
  k.apply({src.data_ptr(), dst.data_ptr(), int(src.element_size()), src.size(0), src.size(1), words.data_ptr<int32_t>()},
          k.stream);
}

at::Tensor masked_copy(const at::Tensor& weight, const at::Tensor& words, const BitmaskKernel& k) {
  const at::Tensor w = weight.contiguous();
  at::Tensor wm = at::empty_like(w);
  apply_bitmask(w, wm, words, k);
  return wm;
}

// The (row block, column block) index pairs of the kept tiles, on the host.
at::Tensor kept_tiles(const at::Tensor& blocks) { return blocks.to(at::kCPU).nonzero(); }

struct Tile {
  int64_t r0, r1, c0, c1;
};

// Calls f for each run of consecutive kept tiles in a tile row (one GEMM per run: at density 1
// a whole tile row is one GEMM, so the dense case runs at the BLAS's full-size rate).
template <typename F>
void for_each_tile(const at::Tensor& blocks, int64_t rows, int64_t cols, int64_t block, F&& f) {
  const at::Tensor kept = kept_tiles(blocks);
  const auto acc = kept.accessor<int64_t, 2>();  // row-major order: runs are adjacent
  for (int64_t k = 0; k < kept.size(0);) {
    const int64_t tr = acc[k][0], tc0 = acc[k][1];
    int64_t tc1 = tc0 + 1;
    for (++k; k < kept.size(0) && acc[k][0] == tr && acc[k][1] == tc1; ++k) ++tc1;
    const int64_t r0 = tr * block;
    f(Tile{r0, std::min(rows, r0 + block), tc0 * block, std::min(cols, tc1 * block)});
  }
}

}  // namespace

at::Tensor pack_mask(const at::Tensor& mask, int64_t block) {
  const int64_t rows = mask.size(0), cols = mask.size(1);
  if (block == 0) {
    const int64_t words = words_per_row(cols);
    at::Tensor padded = at::zeros({rows, words * kWordBits}, mask.options().dtype(at::kLong));
    padded.slice(1, 0, cols).copy_(mask);
    const at::Tensor shifts = at::arange(kWordBits, mask.options().dtype(at::kLong));
    // Σ bit·2^k fits in 32 bits; the cast keeps the bit pattern (two's complement)
    return at::bitwise_left_shift(padded.view({rows, words, kWordBits}), shifts).sum(-1).to(at::kInt);
  }
  const int64_t rb = ceil_div(rows, block), cb = ceil_div(cols, block);
  at::Tensor any = at::zeros({rb * block, cb * block}, mask.options());
  at::Tensor all = at::ones({rb * block, cb * block}, mask.options());
  any.slice(0, 0, rows).slice(1, 0, cols).copy_(mask);
  all.slice(0, 0, rows).slice(1, 0, cols).copy_(mask);
  any = any.view({rb, block, cb, block}).any(3).any(1);
  all = all.view({rb, block, cb, block}).all(3).all(1);
  const at::Tensor mixed = (any != all).nonzero();
  TORCH_CHECK(mixed.size(0) == 0, "ember.pack_mask: mask is not constant on ", block, "×", block, " tiles (tile (",
              mixed.size(0) ? mixed[0][0].item<int64_t>() : 0, ", ", mixed.size(0) ? mixed[0][1].item<int64_t>() : 0,
              ") is mixed); pack it as a bitmask (block=None) or draw it by blocks");
  return any.to(at::kByte);
}

at::Tensor unpack_mask(const at::Tensor& packed, int64_t rows, int64_t cols, int64_t block) {
  if (block == 0) {
    const at::Tensor shifts = at::arange(kWordBits, packed.options().dtype(at::kLong));
    const at::Tensor words = packed.to(at::kLong).bitwise_and(0xFFFFFFFFLL).unsqueeze(-1);
    return at::bitwise_right_shift(words, shifts).bitwise_and(1).view({rows, -1}).slice(1, 0, cols).to(at::kBool);
  }
  return packed.to(at::kBool).repeat_interleave(block, 0).repeat_interleave(block, 1).slice(0, 0, rows).slice(1, 0, cols).contiguous();
}

at::Tensor masked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                         const std::optional<at::Tensor>& bias, const BitmaskKernel& k) {
  const int64_t out = weight.size(0), in = weight.size(1);
  if (block == 0) return at::linear(x, masked_copy(weight, mask, k), bias);
  at::Tensor y = bias.has_value() ? bias->expand({x.size(0), out}).contiguous() : at::zeros({x.size(0), out}, x.options());
  for_each_tile(mask, out, in, block, [&](const Tile& t) {
    at::Tensor ys = y.slice(1, t.r0, t.r1);
    ys.addmm_(x.slice(1, t.c0, t.c1), weight.slice(0, t.r0, t.r1).slice(1, t.c0, t.c1).t());
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> masked_linear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                                                          bool need_x, bool need_w, const BitmaskKernel& k) {
  at::Tensor dx, dw;
  if (block == 0) {
    if (need_x) dx = at::mm(grad, masked_copy(weight, mask, k));
    if (need_w) {
      dw = at::mm(grad.t(), x);
      apply_bitmask(dw, dw, mask, k);
    }
    return {dx, dw};
  }
  const int64_t out = weight.size(0), in = weight.size(1);
  if (need_x) dx = at::zeros_like(x);
  if (need_w) dw = at::zeros_like(weight);
  for_each_tile(mask, out, in, block, [&](const Tile& t) {
    const at::Tensor g = grad.slice(1, t.r0, t.r1);
    if (need_x) {
      at::Tensor dxs = dx.slice(1, t.c0, t.c1);
      dxs.addmm_(g, weight.slice(0, t.r0, t.r1).slice(1, t.c0, t.c1));
    }
    if (need_w) {
      at::Tensor dws = dw.slice(0, t.r0, t.r1).slice(1, t.c0, t.c1);
      at::mm_out(dws, g.t(), x.slice(1, t.c0, t.c1));
    }
  });
  return {dx, dw};
}

}  // namespace ember::sparse
