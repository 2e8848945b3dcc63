// sparse family: mask packing and masked_linear over ATen tensors, with the device's kernels.
// Block masks skip the empty tiles in the forward, dX and dW: schedule.h turns the mask into
// waves of dense GEMMs (one per run of kept tiles; dW is sampled: only kept tiles are computed
// and stored); in bf16 a wave is one grouped launch of the device's kernel (CUTLASS on CUDA),
// elsewhere its GEMMs run one by one through ATen. Bitmasks never build W⊙M: on CUDA (bf16) the
// bitmask GEMMs mask W tiles in registers as they are loaded and dW in the epilogue
// (include/ember/sparse_bitmask_gemm.h); elsewhere, and for what those kernels refuse, the tiled
// path masks W a tile of rows (forward) or columns (dX) at a time into one small buffer (about kTileBytes, whatever W's
// size) and runs one GEMM per tile, each output element written once; dW is masked in place.
#include "sparse_driver.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "kernel_registry.h"
#include "strict_mode.h"
#include "schedule.h"

namespace ember::sparse {
namespace {

// dst = src ⊙ M (dst may be src): src and dst row-major blocks (unit column stride) of one
// shape, words the bitmask rows and words of src's block (its first column a multiple of 32).
void apply_bitmask(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& words, const Kernels& k) {
  k.apply_bitmask({src.data_ptr(), dst.data_ptr(), int(src.element_size()), src.size(0), src.size(1),
                   words.data_ptr<int32_t>(), src.stride(0), dst.stride(0), words.stride(0)},
                  k.stream);
}

// The tiled bitmask path's budget for one tile of W⊙M rows; EMBER_SPARSE_TILE_BYTES overrides it
// (the tests make tiles of a few rows).
constexpr int64_t kTileBytes = int64_t(8) << 20;

// Rows (or columns) of a tile of `cols` elements each, out of `rows`.
int64_t tile_rows(int64_t rows, int64_t cols, int64_t element_size) {
  const char* env = env_value("EMBER_SPARSE_TILE_BYTES");
  const int64_t budget = env != nullptr ? std::max<int64_t>(1, std::atoll(env)) : kTileBytes;
  return std::clamp<int64_t>(budget / std::max<int64_t>(1, cols * element_size), 1, std::max<int64_t>(rows, 1));
}

// Runs p on the device's bitmask GEMM; false when there is none (CPU) or it refuses p.
bool bitmask_kernel(const BitmaskGemmParams& p, const at::Tensor& like, const Kernels& k) {
  if (k.bitmask_gemm == nullptr || kernel_disabled("sparse.bitmask_gemm")) return false;  // the tiled path instead
  if (k.bitmask_gemm(p, like.scalar_type() == at::kBFloat16, k.stream)) return true;
  if (like.scalar_type() == at::kBFloat16)
    check_not_strict("EMBER_SPARSE_STRICT", "ember.masked_linear", "the bitmask GEMM refused its problem");
  return false;
}

// y = x·(W⊙M)ᵀ + bias, tile by tile of W rows; x, w contiguous.
at::Tensor bitmask_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& words,
                           const std::optional<at::Tensor>& bias, const Kernels& k) {
  const int64_t tokens = x.size(0), out = w.size(0), in = w.size(1);
  at::Tensor y = at::empty({tokens, out}, x.options());
  if (tokens == 0 || out == 0) return y;
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const BitmaskGemmParams p{BitmaskGemmKind::kForward,
                            tokens,
                            out,
                            in,
                            x.data_ptr(),
                            nullptr,
                            w.data_ptr(),
                            b.defined() ? b.data_ptr() : nullptr,
                            y.data_ptr(),
                            words.data_ptr<int32_t>()};
  if (bitmask_kernel(p, x, k)) return y;
  const int64_t rows = tile_rows(out, in, w.element_size());
  at::Tensor tile = at::empty({std::min(rows, out), in}, w.options());
  for (int64_t r0 = 0; r0 < out; r0 += rows) {
    const int64_t n = std::min(rows, out - r0);
    at::Tensor wm = tile.narrow(0, 0, n);
    apply_bitmask(w.narrow(0, r0, n), wm, words.narrow(0, r0, n), k);
    at::Tensor ys = y.narrow(1, r0, n);
    if (b.defined()) {
      at::addmm_out(ys, b.narrow(0, r0, n), x, wm.t());
    } else {
      at::mm_out(ys, x, wm.t());
    }
  }
  return y;
}

// dx = dy·(W⊙M), tile by tile of W columns (dx's columns: every element is one GEMM's, rounded
// once); g, w contiguous. Tiles start at multiples of 32 columns, a mask word's.
at::Tensor bitmask_dgrad(const at::Tensor& g, const at::Tensor& w, const at::Tensor& words, const Kernels& k) {
  const int64_t tokens = g.size(0), out = w.size(0), in = w.size(1);
  if (tokens == 0 || in == 0 || out == 0) return at::zeros({tokens, in}, g.options());
  at::Tensor dx = at::empty({tokens, in}, g.options());
  const BitmaskGemmParams p{
      BitmaskGemmKind::kDgrad,  tokens, out, in, nullptr, g.data_ptr(), w.data_ptr(), nullptr, dx.data_ptr(),
      words.data_ptr<int32_t>()};
  if (bitmask_kernel(p, g, k)) return dx;
  const int64_t cols = std::max<int64_t>(kWordBits, tile_rows(in, out, w.element_size()) / kWordBits * kWordBits);
  at::Tensor tile = at::empty({out, std::min(cols, in)}, w.options());
  for (int64_t c0 = 0; c0 < in; c0 += cols) {
    const int64_t n = std::min(cols, in - c0);
    at::Tensor wm = tile.narrow(1, 0, n);
    apply_bitmask(w.narrow(1, c0, n), wm, words.narrow(1, c0 / kWordBits, words_per_row(n)), k);
    at::Tensor dxs = dx.narrow(1, c0, n);
    at::mm_out(dxs, g, wm);
  }
  return dx;
}

// dw = (dyᵀ·x)⊙M; g, x contiguous.
at::Tensor bitmask_wgrad(const at::Tensor& g, const at::Tensor& x, const at::Tensor& words, const Kernels& k) {
  const int64_t tokens = g.size(0), out = g.size(1), in = x.size(1);
  if (tokens == 0 || in == 0 || out == 0) return at::zeros({out, in}, g.options());
  at::Tensor dw = at::empty({out, in}, g.options());
  const BitmaskGemmParams p{
      BitmaskGemmKind::kWgrad,  tokens, out, in, x.data_ptr(), g.data_ptr(), nullptr, nullptr, dw.data_ptr(),
      words.data_ptr<int32_t>()};
  if (bitmask_kernel(p, g, k)) return dw;
  at::mm_out(dw, g.t(), x);
  apply_bitmask(dw, dw, words, k);
  return dw;
}

// One wave of schedule() (schedule.h). In bf16 the wave goes to the device's grouped GEMM as
// group descriptors (one CUTLASS launch on CUDA; on the CPU the same descriptors run group by
// group, so CPU tests check the addressing the GPU gets); otherwise, or when the kernel refuses,
// GEMM by GEMM on tensor slices. a, b, d: the kind's operands (schedule.h's table), contiguous.
void run_wave(GroupedKind kind, const std::vector<Tile>& wave, const at::Tensor& a, const at::Tensor& b,
              const at::Tensor& d, const Kernels& k) {
  const bool accumulate = kind != GroupedKind::kWgrad;
  if (k.grouped_gemm != nullptr && d.scalar_type() == at::kBFloat16 && a.size(0) > 0 &&
      !kernel_disabled("sparse.grouped")) {  // else GEMM by GEMM
    const int64_t la = a.size(1), lb = b.size(1), ld = d.size(1), tokens = a.size(0);
    const auto* pa = static_cast<const c10::BFloat16*>(a.data_ptr());
    const auto* pb = static_cast<const c10::BFloat16*>(b.data_ptr());
    auto* pd = static_cast<c10::BFloat16*>(d.data_ptr());
    std::vector<GemmGroup> groups;
    groups.reserve(wave.size());
    for (const Tile& t : wave) {
      const int64_t rows = t.r1 - t.r0, cols = t.c1 - t.c0;
      if (kind == GroupedKind::kForward)
        groups.push_back({tokens, rows, cols, pa + t.c0, la, pb + t.r0 * lb + t.c0, lb, pd + t.r0, ld});
      else if (kind == GroupedKind::kDgrad)
        groups.push_back({tokens, cols, rows, pa + t.r0, la, pb + t.r0 * lb + t.c0, lb, pd + t.c0, ld});
      else
        groups.push_back({rows, cols, tokens, pa + t.r0, la, pb + t.c0, lb, pd + t.r0 * ld + t.c0, ld});
    }
    const int count = static_cast<int>(groups.size());
    const at::Tensor workspace = at::empty({k.grouped_gemm_workspace_bytes(kind, count)}, d.options().dtype(at::kByte));
    if (k.grouped_gemm(kind, groups.data(), count, accumulate, workspace.data_ptr(), k.stream)) return;
    // Refusals are legitimate (ragged edges not a multiple of 8); the tests make them errors on
    // shapes the kernel must take, so a dead kernel cannot hide behind the fallback.
    check_not_strict("EMBER_SPARSE_STRICT", "ember.masked_linear", "the grouped GEMM refused a wave of GEMMs");
  }
  for (const Tile& t : wave) {
    if (kind == GroupedKind::kForward) {
      d.slice(1, t.r0, t.r1).addmm_(a.slice(1, t.c0, t.c1), b.slice(0, t.r0, t.r1).slice(1, t.c0, t.c1).t());
    } else if (kind == GroupedKind::kDgrad) {
      d.slice(1, t.c0, t.c1).addmm_(a.slice(1, t.r0, t.r1), b.slice(0, t.r0, t.r1).slice(1, t.c0, t.c1));
    } else {
      at::Tensor dws = d.slice(0, t.r0, t.r1).slice(1, t.c0, t.c1);
      at::mm_out(dws, a.slice(1, t.r0, t.r1).t(), b.slice(1, t.c0, t.c1));
    }
  }
}

// All waves of one kind for the block mask `blocks` of a rows × cols weight.
void run_schedule(GroupedKind kind, const at::Tensor& blocks, int64_t rows, int64_t cols, int64_t block,
                  const at::Tensor& a, const at::Tensor& b, const at::Tensor& d, const Kernels& k) {
  const at::Tensor host = blocks.to(at::kCPU).contiguous();
  for (const auto& wave : schedule(kind, host.data_ptr<uint8_t>(), rows, cols, block)) run_wave(kind, wave, a, b, d, k);
  // The rule (sparse_driver.h) is the GEMM over W⊙M with pruned weights +0, where a non-finite element
  // of a times a pruned +0 is NaN, as the bitmask path computes it. Skipped tiles lose that, so it
  // is marked here: d[i, c] = NaN where a[i, r] is not finite and tile (r, c) is pruned (forward:
  // r along W's columns, c along its rows; dX the other way round). One pass over a and a
  // tiles × tiles GEMM of 0/1 counts (exact), on the device, no synchronization.
  if (kind == GroupedKind::kWgrad || d.numel() == 0 || a.size(1) == 0 || !host.eq(0).any().item<bool>()) return;
  const at::Tensor pruned = kind == GroupedKind::kForward ? blocks.eq(0).t() : blocks.eq(0);  // (a's tiles, d's tiles)
  const int64_t n = a.size(0), ta = pruned.size(0), td = pruned.size(1);
  at::Tensor bad = a.isfinite().logical_not_();
  if (ta * block != a.size(1)) bad = at::constant_pad_nd(bad, {0, ta * block - a.size(1)});
  bad = bad.view({n, ta, block}).any(2).to(at::kFloat);
  const at::Tensor hits = at::mm(bad, pruned.to(at::kFloat)).gt(0);  // (n, td)
  d.masked_fill_(hits.unsqueeze(2).expand({n, td, block}).reshape({n, td * block}).narrow(1, 0, d.size(1)),
                 std::numeric_limits<double>::quiet_NaN());
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
    // reshape, not view: packed may be in any layout; the explicit width also serves rows == 0
    return at::bitwise_right_shift(words, shifts)
        .bitwise_and(1)
        .reshape({rows, packed.size(1) * kWordBits})
        .slice(1, 0, cols)
        .to(at::kBool);
  }
  return packed.to(at::kBool)
      .repeat_interleave(block, 0)
      .repeat_interleave(block, 1)
      .slice(0, 0, rows)
      .slice(1, 0, cols)
      .contiguous();
}

at::Tensor masked_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                         const std::optional<at::Tensor>& bias, const Kernels& k) {
  const int64_t out = weight.size(0), in = weight.size(1);
  if (block == 0) return bitmask_forward(x.contiguous(), weight.contiguous(), mask.contiguous(), bias, k);
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  // clone, not contiguous(): for one row the expanded bias is contiguous already, and y would be bias
  at::Tensor y = bias.has_value() ? bias->expand({x.size(0), out}).clone(at::MemoryFormat::Contiguous)
                                  : at::zeros({x.size(0), out}, x.options());
  run_schedule(GroupedKind::kForward, mask, out, in, block, xc, wc, y, k);
  return y;
}

std::tuple<at::Tensor, at::Tensor> masked_linear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& weight, const at::Tensor& mask,
                                                          int64_t block, bool need_x, bool need_w, const Kernels& k) {
  at::Tensor dx, dw;
  if (block == 0) {
    const at::Tensor gc = grad.contiguous(), words = mask.contiguous();
    if (need_x) dx = bitmask_dgrad(gc, weight.contiguous(), words, k);
    if (need_w) dw = bitmask_wgrad(gc, x.contiguous(), words, k);
    return {dx, dw};
  }
  const int64_t out = weight.size(0), in = weight.size(1);
  const at::Tensor gc = grad.contiguous(), xc = x.contiguous(), wc = weight.contiguous();
  if (need_x) {
    dx = at::zeros_like(xc);
    run_schedule(GroupedKind::kDgrad, mask, out, in, block, gc, wc, dx, k);
  }
  if (need_w) {
    dw = at::zeros_like(wc);
    run_schedule(GroupedKind::kWgrad, mask, out, in, block, gc, xc, dw, k);
  }
  return {dx, dw};
}

}  // namespace ember::sparse
