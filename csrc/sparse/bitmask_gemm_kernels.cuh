// CUTLASS 4.2 (sm90a) templates of the bitmask GEMMs (include/ember/sparse_bitmask_gemm.h), shared by the three kernel
// files (one instantiation each: an sm90 instantiation costs minutes of nvcc).
//
// Forward and dX: W⊙M is the A operand of a side-tile mainloop (../side_tile_mainloop.cuh) whose
// transform zeroes pruned elements in registers (masked_bits, include/ember/sparse.h: the same
// definition the CPU path applies to its W tiles), the side tile being the stage's mask words:
// W tiles go global -> shared (TMA) -> registers (masked) -> tensor cores, and no W⊙M exists.
// The mask's rows must be a multiple of 16 bytes (TMA): W's in-features a multiple of 128,
// checked by bitmask_gemm.cu. Problem mapping (CUTLASS M', N', K'; D column-major, i.e. the
// row-major result transposed):
//   forward  M' = out, N' = tokens, K' = in:  A = W (K-major),   B = x,  D = yᵀ,  bias per M'
//   dX       M' = in,  N' = tokens, K' = out: A = Wᵀ (M-major),  B = dy, D = dxᵀ
//
// dW = (dyᵀ·x)⊙M: a stock CUTLASS warp-specialized GEMM (A = dyᵀ M-major, B = x N-major, D = dw
// row-major) whose epilogue visitor tree reads the mask as a 1-bit auxiliary tensor (CUTLASS's
// Sm90AuxLoad<uint1b_t>: bit n of row m at bit offset m·32·words + n, exactly the bitmask
// layout) and keeps the accumulator where the bit is 1, +0 elsewhere.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_load_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/functional.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/numeric_types.h"

#include "cutlass_run.cuh"
#include "side_tile_mainloop.cuh"
#include "bitmask_gemm_kernels.h"
#include "ember/sparse.h"

namespace ember::sparse::bitmask_impl {

using namespace cute;
using sm90::Cluster;
using sm90::Element;
using sm90::Schedule;
using sm90::Tile;
namespace fusion = cutlass::epilogue::fusion;

constexpr int kAlignment = 8;  // bf16 elements per 16 bytes
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// The bitmask as a side-tile transform (../side_tile_mainloop.cuh): the side tile is the stage's
// mask words, one row per W row of the A tile (forward: words from k0/32 on, the first two used;
// dX: words from m0/32 on, all four used); a pruned element becomes +0 (masked_bits).
struct MaskTransform {
  using ElementA = Element;
  struct Params {};
  template <bool kTransposedA>
  CUTLASS_HOST_DEVICE static auto origin(int m0, int k0) {
    return kTransposedA ? make_coord(k0, m0 / kWordBits) : make_coord(m0, k0 / kWordBits);
  }
  template <bool kTransposedA, class Side>
  CUTLASS_DEVICE static Element apply(Element a, Side const& side, int m, int k, Params const&) {
    const int row = kTransposedA ? k : m, j = kTransposedA ? m : k;  // mask row, bit within the tile
    return Element::bitcast(masked_bits<uint16_t>(a.raw(), side(row, j / kWordBits), j));
  }
};

// Forward (kTransposedA false) or dX (true). D = acc [+ bias per M'] in bf16, column-major.
template <bool kTransposedA, class TileShape = Tile>
struct MaskedGemm {
  using Bias = fusion::Sm90ColBroadcast<0, TileShape, Element, float, Stride<_1, _0, int64_t>, 1, true>;
  using Tree = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, Element, float, kRound>, fusion::Sm90AccFetch, Bias>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,  // accumulator, compute
      void, cutlass::layout::ColumnMajor, kAlignment,                 // no C
      Element, cutlass::layout::ColumnMajor, kAlignment, cutlass::epilogue::TmaWarpSpecializedCooperative,
      Tree>::CollectiveOp;
  static constexpr int kStages =
      sm90::side_tile_stages<kTransposedA, Element>(int(sizeof(typename Epilogue::SharedStorage)));
  static_assert(kStages >= 2);
  using Mainloop = sm90::SideTileAMainloop<kTransposedA, false, kStages, MaskTransform>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  static_assert(sizeof(typename Kernel::SharedStorage) <= cutlass::gemm::collective::detail::sm90_smem_capacity_bytes);

  // Problem (M', N', K'), A, B, D as in the table at the top.
  static typename Gemm::Arguments arguments(const BitmaskGemmParams& p, const CutlassLaunch& launch) {
    const int tokens = int(p.tokens), out = int(p.out), in = int(p.in);
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    using StrideA = typename Mainloop::StrideA;
    using StrideB = typename Mainloop::StrideB;
    if constexpr (kTransposedA) {
      args.problem_shape = make_shape(in, tokens, out, 1);
      args.mainloop.ptr_A = static_cast<const Element*>(p.weight);
      args.mainloop.dA = StrideA{_1{}, int64_t(in), int64_t(0)};
      args.mainloop.ptr_B = static_cast<const Element*>(p.grad);
      args.mainloop.dB = StrideB{int64_t(out), _1{}, int64_t(0)};
    } else {
      args.problem_shape = make_shape(out, tokens, in, 1);
      args.mainloop.ptr_A = static_cast<const Element*>(p.weight);
      args.mainloop.dA = StrideA{int64_t(in), _1{}, int64_t(0)};
      args.mainloop.ptr_B = static_cast<const Element*>(p.x);
      args.mainloop.dB = StrideB{int64_t(in), _1{}, int64_t(0)};
    }
    args.mainloop.side = p.words;
    args.mainloop.side_rows = out;
    args.mainloop.side_words = int32_t(words_per_row(in));
    typename Bias::Arguments bias{
        kTransposedA ? nullptr : static_cast<const Element*>(p.bias), Element(0), {_1{}, _0{}, int64_t(0)}};
    args.epilogue.thread = {{}, bias, {}};  // (acc fetch, bias, plus)
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = {_1{}, int64_t(kTransposedA ? in : out), int64_t(0)};  // M' rows, column-major
    args.epilogue.ptr_D = static_cast<Element*>(p.result);
    args.epilogue.dD = {_1{}, int64_t(kTransposedA ? in : out), int64_t(0)};
    args.hw_info = hardware_info(launch);
    return args;
  }
};

// ---- dW: masked epilogue -----------------------------------------------------------------------

// acc where the mask bit is set, +0 elsewhere (the bit arrives converted to 1.0f / 0.0f).
template <class T>
struct KeepWhereSet {
  CUTLASS_HOST_DEVICE T operator()(T const& acc, T const& bit) const { return bit != T(0) ? acc : T(0); }
};
template <class T, int N>
struct KeepWhereSet<cutlass::Array<T, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& acc,
                                                      cutlass::Array<T, N> const& bit) const {
    cutlass::Array<T, N> out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = KeepWhereSet<T>{}(acc[i], bit[i]);
    return out;
  }
};

template <class TileShape = Tile>
struct MaskedWgradGemm {
  // Read straight from global memory, predicated per element on the problem's residue (CUTLASS's
  // uint1b_t specialization; its Stages, tile and shared-memory parameters are unused); 128 is the
  // alignment it requires of the rows (in % 128) and the 16-byte base.
  using Mask =
      fusion::Sm90AuxLoad<2, Shape<_64, _32>, cutlass::uint1b_t, Stride<int64_t, _1, int64_t>, void, void, 128, false>;
  using Tree = fusion::Sm90EVT<fusion::Sm90Compute<KeepWhereSet, Element, float, kRound>, fusion::Sm90AccFetch, Mask>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::RowMajor, kAlignment,
      Element, cutlass::layout::RowMajor, kAlignment, cutlass::epilogue::TmaWarpSpecializedCooperative,
      Tree>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::ColumnMajor, kAlignment, Element,
      cutlass::layout::RowMajor, kAlignment, float, TileShape, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      Schedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  // M' = out, N' = in, K' = tokens: A = dyᵀ (M-major), B = x (N-major), D = dw row-major.
  static typename Gemm::Arguments arguments(const BitmaskGemmParams& p, const CutlassLaunch& launch) {
    const int tokens = int(p.tokens), out = int(p.out), in = int(p.in);
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = make_shape(out, in, tokens, 1);
    args.mainloop.ptr_A = static_cast<const Element*>(p.grad);
    args.mainloop.dA = typename Kernel::StrideA{_1{}, int64_t(out), int64_t(0)};
    args.mainloop.ptr_B = static_cast<const Element*>(p.x);
    args.mainloop.dB = typename Kernel::StrideB{_1{}, int64_t(in), int64_t(0)};
    const int64_t row_bits = words_per_row(in) * kWordBits;
    typename Mask::Arguments mask{
        reinterpret_cast<const cutlass::uint1b_t*>(p.words), cutlass::uint1b_t(0), {row_bits, _1{}, int64_t(0)}};
    args.epilogue.thread = {{}, mask, {}};  // (acc fetch, mask, keep)
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = {int64_t(in), _1{}, int64_t(0)};
    args.epilogue.ptr_D = static_cast<Element*>(p.result);
    args.epilogue.dD = {int64_t(in), _1{}, int64_t(0)};
    args.hw_info = hardware_info(launch);
    return args;
  }
};

// The kernel files run these through run_config (cutlass_run.cuh) with no workspace: these kernels
// need none (no split-K, no reduction), and one that asked for some would be refused.

}  // namespace ember::sparse::bitmask_impl
