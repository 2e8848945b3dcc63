// CUTLASS 4.2 (sm90a) templates of the softmax-gradient GEMMs (include/ember/cross_entropy_softmax_grad.h), shared by
// softmax_grad_{dh,dw}.cu (one instantiation each: an sm90 instantiation costs minutes of nvcc).
//
// The fp32 logits chunk Z is the A operand of a side-tile mainloop (../side_tile_mainloop.cuh)
// whose transform turns each logit into its gradient in registers (grad_logit of
// include/ember/cross_entropy.h, target term included: the same function the CPU runs), rounded
// to bf16 for the MMA. The side tile of a stage is the group of the side tensor for the A tile's
// vocabulary tile: one row of 4 words per token (lse, scale, target column relative to the tile,
// 0). Problem mapping (CUTLASS M', N', K'; all matrices row-major in memory):
//   dh  M' = rows,  N' = dim, K' = vocab: A = Z (K-major),  B = W (N-major), D = dh (fp32), no C;
//       stream-K: a chunk has few M' × N' tiles (512 rows × 4096: 64 of 128×256) and a long K
//       (the vocabulary), so CUTLASS's stream-K scheduler splits K across the SMs and reduces
//       the partial tiles in the caller's workspace (deterministic reduction)
//   dW  M' = vocab, N' = dim, K' = rows:  A = Zᵀ (M-major), B = h (N-major), D = dW (bf16), C = D, beta 1
// Out-of-range elements are harmless: past the vocabulary, B (dh) is zero-filled by TMA and D
// rows (dW) are clipped; past the chunk's rows, the side tile is zero-filled, so scale is 0.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
#include "cutlass/kernel_hardware_info.h"

#include "cutlass_run.cuh"
#include "side_tile_mainloop.cuh"
#include "ember/cross_entropy.h"
#include "softmax_grad_kernels.h"

namespace ember::ce::softmax_grad_impl {

using namespace cute;
using sm90::Cluster;
using sm90::Element;
using sm90::Tile;
namespace fusion = cutlass::epilogue::fusion;

constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// The softmax gradient as a side-tile transform. The side tile holds the rows of the tile (dh:
// per M') or of the k tile (dW: per K'), from the side tensor's group for the A tile's vocabulary
// tile (dh: its k tile of 64 columns; dW: its m tile of 128).
struct SoftmaxGradTransform {
  using ElementA = float;  // the fp32 logits chunk
  struct Params {
    Options opt;
    int64_t vocab;
  };
  static_assert(side_block(SoftmaxGradKind::kDhidden) == sm90::kBlkK &&
                side_block(SoftmaxGradKind::kDweight) == sm90::kBlkM);
  template <bool kTransposedA>
  CUTLASS_HOST_DEVICE static auto origin(int m0, int k0) {
    return kTransposedA ? make_coord(k0, sm90::kSideWords * (m0 / sm90::kBlkM))
                        : make_coord(m0, sm90::kSideWords * (k0 / sm90::kBlkK));
  }
  template <bool kTransposedA, class Side>
  CUTLASS_DEVICE static Element apply(float z, Side const& side, int m, int k, Params const& p) {
    const int row = kTransposedA ? k : m, column = kTransposedA ? m : k;  // token; vocabulary column in the tile
    const uint32_t group[4] = {side(row, 0), side(row, 1), side(row, 2), side(row, 3)};
    return Element(grad_logit_from_side(p.opt, z, group, column, p.vocab));
  }
};

// dh (kTransposedA false): D = acc in fp32 with no C (stream-K reduces in fp32; the caller
// rounds once); dW (true): D = acc + D in bf16, accumulated in place (C = D).
template <bool kTransposedA>
struct SoftmaxGradEpilogue {
  using ElementC = void;
  using ElementD = float;
  using Fusion = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::epilogue::thread::Identity, float, float, kRound>,
                                 fusion::Sm90AccFetch>;
};
template <>
struct SoftmaxGradEpilogue<true> {
  using ElementC = Element;
  using ElementD = Element;
  using Fusion = fusion::LinearCombination<Element, float, Element, float>;
};

template <bool kTransposedA, class TileShape = Tile>
struct SoftmaxGradGemm {
  using Config = SoftmaxGradEpilogue<kTransposedA>;
  using ElementD = typename Config::ElementD;
  static constexpr int kAlignmentD = 128 / sizeof_bits_v<ElementD>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster, Shape<_128, _16>, float,
      float,  // epilogue subtile (half the default: room for 3 stages), accumulator, compute
      typename Config::ElementC, cutlass::layout::RowMajor, kAlignmentD, ElementD, cutlass::layout::RowMajor,
      kAlignmentD, cutlass::epilogue::TmaWarpSpecializedCooperative, typename Config::Fusion>::CollectiveOp;
  static constexpr int kStages =
      sm90::side_tile_stages<kTransposedA, float>(int(sizeof(typename Epilogue::SharedStorage)));
  static_assert(kStages >= 2);
  using Mainloop = sm90::SideTileAMainloop<kTransposedA, true, kStages, SoftmaxGradTransform>;
  using Scheduler = conditional_t<kTransposedA, void, cutlass::gemm::StreamKScheduler>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue, Scheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  static_assert(sizeof(typename Kernel::SharedStorage) <= cutlass::gemm::collective::detail::sm90_smem_capacity_bytes);

  static typename Gemm::Arguments arguments(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch) {
    const int rows = int(p.rows), vocab = int(p.vocab), dim = int(p.dim);
    using StrideA = typename Mainloop::StrideA;
    using StrideB = typename Mainloop::StrideB;
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.mainloop.ptr_A = static_cast<const float*>(p.logits);
    args.mainloop.ptr_B = static_cast<const Element*>(p.operand);
    args.mainloop.dB = StrideB{_1{}, int64_t(dim), int64_t(0)};
    if constexpr (kTransposedA) {
      args.problem_shape = make_shape(vocab, dim, rows, 1);
      args.mainloop.dA = StrideA{_1{}, int64_t(vocab), int64_t(0)};
    } else {
      args.problem_shape = make_shape(rows, dim, vocab, 1);
      args.mainloop.dA = StrideA{int64_t(vocab), _1{}, int64_t(0)};
    }
    args.mainloop.side = p.side;
    args.mainloop.side_rows = rows;
    args.mainloop.side_words = int32_t(p.side_words);
    args.mainloop.transform = {p.opt, p.vocab};
    auto* d = static_cast<ElementD*>(p.result);
    if constexpr (kTransposedA) {  // dW accumulates over the chunks: C = D, beta = 1
      args.epilogue.thread.alpha = 1.0f;
      args.epilogue.thread.beta = 1.0f;
      args.epilogue.thread.alpha_ptr = nullptr;
      args.epilogue.thread.beta_ptr = nullptr;
      args.epilogue.ptr_C = d;
    } else {
      args.epilogue.ptr_C = nullptr;
    }
    args.epilogue.dC = {int64_t(dim), _1{}, int64_t(0)};
    args.epilogue.ptr_D = d;
    args.epilogue.dD = {int64_t(dim), _1{}, int64_t(0)};
    args.hw_info = hardware_info(launch);
    return args;
  }
};

// The workspace one configuration needs for p.
template <class Config>
int64_t workspace_bytes(const SoftmaxGradGemmParams& p, const CutlassLaunch& launch) {
  return int64_t(Config::Gemm::get_workspace_size(Config::arguments(p, launch)));
}

}  // namespace ember::ce::softmax_grad_impl
