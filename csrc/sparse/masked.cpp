// sparse family: mask packing and masked_linear over ATen tensors, with the device's kernels.
// Block masks skip the empty tiles in the forward, dX and dW: schedule.h turns the mask into
// waves of dense GEMMs (one per run of kept tiles; dW is sampled: only kept tiles are computed
// and stored); in bf16 a wave is one grouped launch of the device's kernel (CUTLASS on CUDA),
// elsewhere its GEMMs run one by one through ATen. Bitmasks apply the mask with the device's bitmask kernel (one pass, no
// temporaries beyond the result) to a transient W⊙M copy (forward, dX) and in place to dYᵀ·X
// (dW); a GEMM that applies the mask while loading W tiles is not written yet.
#include "masked.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "schedule.h"

namespace ember::sparse {
namespace {

// dst = src ⊙ M (dst may be src), src and dst contiguous, of the weight's shape.
void apply_bitmask(const at::Tensor& src, const at::Tensor& dst, const at::Tensor& words, const DeviceKernels& k) {
  k.apply_bitmask({src.data_ptr(), dst.data_ptr(), int(src.element_size()), src.size(0), src.size(1), words.data_ptr<int32_t>()},
          k.stream);
}

at::Tensor masked_copy(const at::Tensor& weight, const at::Tensor& words, const DeviceKernels& k) {
  const at::Tensor w = weight.contiguous();
  at::Tensor wm = at::empty_like(w);
  apply_bitmask(w, wm, words, k);
  return wm;
}

// One wave of schedule() (schedule.h). In bf16 the wave goes to the device's grouped GEMM as
// group descriptors (one CUTLASS launch on CUDA; on the CPU the same descriptors run group by
// group, so CPU tests check the addressing the GPU gets); otherwise, or when the kernel refuses,
// GEMM by GEMM on tensor slices. a, b, d: the kind's operands (schedule.h's table), contiguous.
void run_wave(GroupedKind kind, const std::vector<Tile>& wave, const at::Tensor& a, const at::Tensor& b,
              const at::Tensor& d, const DeviceKernels& k) {
  const bool accumulate = kind != GroupedKind::kWgrad;
  if (k.grouped_gemm != nullptr && d.scalar_type() == at::kBFloat16 && a.size(0) > 0) {
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
    const at::Tensor workspace =
        at::empty({k.grouped_workspace_bytes(kind, count)}, d.options().dtype(at::kByte));
    if (k.grouped_gemm(kind, groups.data(), count, accumulate, workspace.data_ptr(), k.stream)) return;
    // Refusals are legitimate (ragged edges not a multiple of 8); the tests make them errors on
    // shapes the kernel must take, so a dead kernel cannot hide behind the fallback.
    const char* strict = std::getenv("EMBER_SPARSE_GROUPED_STRICT");
    TORCH_CHECK(strict == nullptr || std::string(strict) == "0", "ember.masked_linear: the grouped GEMM refused a wave of ",
                count, " GEMMs (EMBER_SPARSE_GROUPED_STRICT is set, so no fallback)");
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
                  const at::Tensor& a, const at::Tensor& b, const at::Tensor& d, const DeviceKernels& k) {
  const at::Tensor host = blocks.to(at::kCPU).contiguous();
  for (const auto& wave : schedule(kind, host.data_ptr<uint8_t>(), rows, cols, block)) run_wave(kind, wave, a, b, d, k);
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
                         const std::optional<at::Tensor>& bias, const DeviceKernels& k) {
  const int64_t out = weight.size(0), in = weight.size(1);
  if (block == 0) return at::linear(x, masked_copy(weight, mask, k), bias);
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor y = bias.has_value() ? bias->expand({x.size(0), out}).contiguous() : at::zeros({x.size(0), out}, x.options());
  run_schedule(GroupedKind::kForward, mask, out, in, block, xc, wc, y, k);
  return y;
}

std::tuple<at::Tensor, at::Tensor> masked_linear_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& weight, const at::Tensor& mask, int64_t block,
                                                          bool need_x, bool need_w, const DeviceKernels& k) {
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
