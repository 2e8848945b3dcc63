// CUTLASS 4.2 (sm90a) templates of the bitmask GEMMs (bitmask_gemm.h), shared by the three kernel
// files (one instantiation each: an sm90 instantiation costs minutes of nvcc).
//
// Forward and dX: W⊙M is the A operand, masked in registers. wgmma reads its A operand either
// from shared memory or from registers; from registers the mask can be applied between the load
// and the MMA, so W tiles go global -> shared (TMA) -> registers (masked) -> tensor cores and no
// W⊙M exists anywhere. MaskedAMainloop is CUTLASS's TMA warp-specialized "A from registers"
// mainloop (MainloopSm90TmaGmmaRmemAWarpSpecialized: its types, TMA descriptors, producer tail
// and consumer tail are reused) with two parts of its own:
//   - load(): every pipeline stage also carries the stage's mask tile, loaded by TMA into the
//     same stage and counted in the same transaction bytes, so the consumers' wait on the stage
//     covers the mask too. The tile is kMaskWords = 4 int32 words wide (16 bytes, the TMA box
//     minimum) and one row per W row of the A tile; the mask's row stride must therefore be a
//     multiple of 16 bytes (W's in-features a multiple of 128, checked by bitmask_gemm.cu).
//   - mma(): for each 16-deep k-block, copy the A fragment shared -> registers, replace every
//     element whose mask bit is 0 by +0 (masked_bits, include/ember/sparse.h: the same
//     definition the CPU path applies to its W tiles), then issue the wgmma. The copy of block
//     b+1 overlaps the wgmma of block b; a fragment's registers are rewritten only after the
//     wgmma that read them has retired (at most two batches in flight), and a stage goes back
//     to the producer once all wgmmas reading its B tile have retired.
// Problem mapping (CUTLASS M', N', K'; D is column-major, i.e. the row-major result transposed):
//   forward  M' = out, N' = tokens, K' = in:  A = W (K-major),   B = x,  D = yᵀ,  bias per M'
//   dX       M' = in,  N' = tokens, K' = out: A = Wᵀ (M-major),  B = dy, D = dxᵀ
// Tiles 128×256×64, two consumer warp groups (cooperative), cluster 1×1, persistent.
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

#include "../cutlass_run.cuh"
#include "bitmask_gemm_kernels.h"
#include "ember/sparse.h"

namespace ember::sparse::bitmask_impl {

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

using Element = cutlass::bfloat16_t;
using Tile = Shape<_128, _256, _64>;
using Cluster = Shape<_1, _1, _1>;
using Schedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
constexpr int kBlkM = 128, kBlkN = 256, kBlkK = 64;
constexpr int kMaskWords = 4;  // words per mask-tile row: 16 bytes, TMA's minimum box width
constexpr int kAlignment = 8;  // bf16 elements per 16 bytes
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// ---- the masked-A mainloop ---------------------------------------------------------------------

// The CUTLASS "A from registers" collective MaskedAMainloop builds on. kTransposedA: A = Wᵀ
// (M-major in shared memory), else A = W (K-major). B is K-major either way.
template <bool kTransposedA, int Stages>
struct RmemABase {
  using StrideA = conditional_t<kTransposedA, Stride<_1, int64_t, int64_t>, Stride<int64_t, _1, int64_t>>;
  using StrideB = Stride<int64_t, _1, int64_t>;
  using TiledMma = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Tile, GMMA::Major::K, GMMA::Major::K>(), Layout<Shape<_2, _1, _1>>{}));
  using SmemLayoutAtomA = decltype(cutlass::gemm::collective::detail::rs_smem_selector<
                                   kTransposedA ? GMMA::Major::MN : GMMA::Major::K, Element, _128, _64>());
  using SmemLayoutAtomB =
      decltype(cutlass::gemm::collective::detail::rs_smem_selector<GMMA::Major::K, Element, _256, _64>());
  using Collective = cutlass::gemm::collective::CollectiveMma<
      cutlass::gemm::MainloopSm90TmaGmmaRmemAWarpSpecialized<Stages, Cluster, Schedule>, Tile, Element, StrideA,
      Element, StrideB, TiledMma, SM90_TMA_LOAD, SmemLayoutAtomA, Copy_Atom<AutoVectorizingCopy, Element>,
      cute::identity, SM90_TMA_LOAD, SmemLayoutAtomB, void, cute::identity>;
};

template <bool kTransposedA, int Stages>
struct MaskedAMainloop : RmemABase<kTransposedA, Stages>::Collective {
  using Base = typename RmemABase<kTransposedA, Stages>::Collective;
  using typename Base::MainloopPipeline;
  using typename Base::PipelineState;
  using typename Base::SmemLayoutA;
  using typename Base::SmemLayoutB;
  using typename Base::TiledMma;

  // Mask tile of one stage: forward, one row per W row of the A tile (words from k0/32 on, the
  // first two used); dX, one row per W row of the K block (words from m0/32 on, all four used).
  static constexpr int kMaskRows = kTransposedA ? kBlkK : kBlkM;
  using SmemLayoutMask = Layout<Shape<Int<kMaskRows>, Int<kMaskWords>>, Stride<Int<kMaskWords>, _1>>;
  using SmemLayoutMaskPipe = Layout<Shape<Int<kMaskRows>, Int<kMaskWords>, Int<Stages>>,
                                    Stride<Int<kMaskWords>, _1, Int<kMaskRows * kMaskWords>>>;
  static constexpr uint32_t kMaskBytes = kMaskRows * kMaskWords * sizeof(uint32_t);
  using MaskGmem = decltype(make_tensor(make_gmem_ptr(static_cast<const uint32_t*>(nullptr)),
                                        make_layout(make_shape(int32_t(0), int32_t(0)), make_stride(int64_t(0), _1{}))));
  using TmaMask = decltype(make_tma_copy(SM90_TMA_LOAD{}, std::declval<MaskGmem>(), SmemLayoutMask{}));

  struct SharedStorage {
    struct TensorStorage : aligned_struct<cute::max(Base::SmemAlignmentA, Base::SmemAlignmentB), _0> {
      array_aligned<typename TiledMma::ValTypeA, cosize_v<SmemLayoutA>, Base::SmemAlignmentA> smem_A;
      array_aligned<typename TiledMma::ValTypeB, cosize_v<SmemLayoutB>, Base::SmemAlignmentB> smem_B;
      array_aligned<uint32_t, cosize_v<SmemLayoutMaskPipe>, 128> smem_mask;
    } tensors;
    typename Base::PipelineStorage pipeline;
  };
  using TensorStorage = typename SharedStorage::TensorStorage;
  using PipelineStorage = typename Base::PipelineStorage;

  struct Arguments {
    typename Base::Arguments operands;
    const int32_t* words = nullptr;      // the bitmask of W: mask_rows × mask_words int32
    int32_t mask_rows = 0, mask_words = 0;
  };

  struct Params : Base::Params {
    TmaMask tma_load_mask;
    int32_t mask_rows, mask_words;
  };

  static MaskGmem mask_tensor(Arguments const& args) {
    return make_tensor(make_gmem_ptr(reinterpret_cast<const uint32_t*>(args.words)),
                       make_layout(make_shape(args.mask_rows, args.mask_words), make_stride(int64_t(args.mask_words), _1{})));
  }

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& shape, Arguments const& args, void* workspace) {
    Params p{Base::to_underlying_arguments(shape, args.operands, workspace),
             make_tma_copy(SM90_TMA_LOAD{}, mask_tensor(args), SmemLayoutMask{}), args.mask_rows, args.mask_words};
    p.tma_transaction_bytes += kMaskBytes;  // the stage's barrier waits for the mask tile too
    return p;
  }

  template <class ProblemShape>
  static bool can_implement(ProblemShape const& shape, Arguments const& args) {
    const auto addr = reinterpret_cast<uintptr_t>(args.words);
    return Base::can_implement(shape, args.operands) && args.words != nullptr && addr % 16 == 0 &&
           args.mask_rows > 0 && args.mask_words > 0 && args.mask_words % kMaskWords == 0;
  }

  CUTLASS_DEVICE static void prefetch_tma_descriptors(Params const& params) {
    Base::prefetch_tma_descriptors(params);
    prefetch_tma_descriptor(params.tma_load_mask.get_tma_descriptor());
  }

  // Producer: one elected thread issues the A, B and mask TMA loads of each k tile.
  template <class TensorA, class TensorB, class KTileIterator, class BlockCoord>
  CUTLASS_DEVICE void load(Params const& params, MainloopPipeline pipeline, PipelineState write,
                           cute::tuple<TensorA, TensorB> const& inputs, BlockCoord const& blk_coord,
                           KTileIterator k_tile_iter, int k_tile_count, int /*thread_idx*/,
                           uint32_t /*block_rank_in_cluster*/, TensorStorage& smem) {
    if (!elect_one_sync()) return;
    Tensor sA = as_position_independent_swizzle_tensor(make_tensor(make_smem_ptr(smem.smem_A.data()), SmemLayoutA{}));
    Tensor sB = as_position_independent_swizzle_tensor(make_tensor(make_smem_ptr(smem.smem_B.data()), SmemLayoutB{}));
    Tensor sM = make_tensor(make_smem_ptr(smem.smem_mask.data()), SmemLayoutMaskPipe{});
    auto [m_coord, n_coord, k_coord, l_coord] = blk_coord;
    Tensor gA = get<0>(inputs)(_, _, m_coord, _, l_coord);  // (BLK_M, BLK_K, k)
    Tensor gB = get<1>(inputs)(_, _, n_coord, _, l_coord);  // (BLK_N, BLK_K, k)
    auto tma_a = params.tma_load_a.get_slice(0);
    auto tma_b = params.tma_load_b.get_slice(0);
    auto tma_m = params.tma_load_mask.get_slice(0);
    Tensor tAgA = tma_a.partition_S(gA);
    Tensor tAsA = tma_a.partition_D(sA);
    Tensor tBgB = tma_b.partition_S(gB);
    Tensor tBsB = tma_b.partition_D(sB);
    Tensor mM = params.tma_load_mask.get_tma_tensor(make_shape(params.mask_rows, params.mask_words));
    const int m0 = int(m_coord) * kBlkM;

    CUTLASS_PRAGMA_NO_UNROLL
    for (; k_tile_count > 0; --k_tile_count, ++k_tile_iter) {
      pipeline.producer_acquire(write);
      auto* barrier = pipeline.producer_get_barrier(write);
      const int stage = write.index();
      const int k_tile = *k_tile_iter;
      copy(params.tma_load_a.with(*barrier), tAgA(_, _, _, k_tile), tAsA(_, _, _, stage));
      copy(params.tma_load_b.with(*barrier), tBgB(_, _, _, k_tile), tBsB(_, _, _, stage));
      const int k0 = k_tile * kBlkK;
      const auto origin = kTransposedA ? make_coord(k0, m0 / 32) : make_coord(m0, k0 / 32);
      Tensor gM = local_tile(domain_offset(origin, mM), Shape<Int<kMaskRows>, Int<kMaskWords>>{}, make_coord(0, 0));
      copy(params.tma_load_mask.with(*barrier), tma_m.partition_S(gM), tma_m.partition_D(sM(_, _, stage)));
      ++write;
    }
  }

  // Consumers: A fragments masked in registers, B from shared memory. Leaves the last k tile's
  // stage to Base::mma_tail, which releases it once every wgmma has retired.
  template <class FrgTensorC>
  CUTLASS_DEVICE void mma(MainloopPipeline pipeline, PipelineState read, FrgTensorC& accum, int k_tile_count,
                          int thread_idx, TensorStorage& smem, Params const& /*params*/) {
    Tensor sA = as_position_independent_swizzle_tensor(make_tensor(make_smem_ptr(smem.smem_A.data()), SmemLayoutA{}));
    Tensor sB = make_tensor(make_smem_ptr(smem.smem_B.data()), SmemLayoutB{});  // wgmma descriptors
    Tensor sM = make_tensor(make_smem_ptr(smem.smem_mask.data()), SmemLayoutMaskPipe{});

    TiledMma tiled_mma;
    auto thread_mma = tiled_mma.get_thread_slice(thread_idx);
    const int warp_group = __shfl_sync(0xFFFFFFFF, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    constexpr int kWarpGroups = size(TiledMma{}) / cutlass::NumThreadsPerWarpGroup;
    auto group_mma = tiled_mma.get_slice(make_layout(Int<kWarpGroups>{}, Int<cutlass::NumThreadsPerWarpGroup>{})(warp_group));

    Tensor tCrA = thread_mma.partition_fragment_A(sA(_, _, Int<0>{}));                      // (MMA, MMA_M, MMA_K)
    Tensor tCcA = thread_mma.partition_A(make_identity_tensor(make_shape(Int<kBlkM>{}, Int<kBlkK>{})));  // (m, k)
    Tensor tCsB = group_mma.partition_B(sB);                                                 // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tCrB = group_mma.make_fragment_B(tCsB);
    auto copy_a = make_tiled_copy_A(Copy_Atom<AutoVectorizingCopy, Element>{}, tiled_mma);
    auto thread_copy_a = copy_a.get_thread_slice(thread_idx);
    Tensor tCsA_copy = thread_copy_a.partition_S(sA);   // (CPY, CPY_M, CPY_K, PIPE)
    Tensor tCrA_copy = thread_copy_a.retile_D(tCrA);    // (CPY, CPY_M, CPY_K)
    constexpr int kBlocks = size<2>(tCrA);
    static_assert(kBlocks >= 2 && kBlocks == kBlkK / 16);
    static_assert(decltype(size(tCrA(_, _, 0)) == size(tCcA(_, _, 0)))::value);

    // Block b of stage `stage` into registers, masked.
    auto load_block = [&](int stage, auto b) CUTLASS_LAMBDA_FUNC_INLINE {
      copy(copy_a, tCsA_copy(_, _, b, stage), tCrA_copy(_, _, b));
      Tensor frag = tCrA(_, _, b);
      Tensor coord = tCcA(_, _, b);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < size(frag); ++i) {
        const int m = get<0>(coord(i)), k = get<1>(coord(i));
        const int row = kTransposedA ? k : m, j = kTransposedA ? m : k;  // mask row, bit within the tile
        const uint32_t word = sM(row, j / 32, stage);
        frag(i) = Element::bitcast(masked_bits<uint16_t>(frag(i).raw(), word, j));
      }
    };

    // Accumulators cleared here and every wgmma accumulates: no scale-out predicate to vary.
    clear(accum);
    tiled_mma.accumulate_ = GMMA::ScaleOut::One;
    warpgroup_fence_operand(accum);

    // One k tile. Block b+1 goes into registers (masked) before block b's wgmma is issued, and at
    // most two batches stay in flight, so a fragment is rewritten only after the batch that read
    // it (kBlocks = 4 batches earlier) has retired. The last block prefetches block 0 of the next
    // tile (kNext); at block 1 the previous tile's batches have all retired and its stage is
    // released (kRelease). First, middle and last tiles are separate instantiations, so the
    // wgmma pipeline has no run-time branches (ptxas serializes wgmmas it cannot prove safe).
    PipelineState release = read;
    auto run_tile = [&](auto next_tile, auto release_previous) CUTLASS_LAMBDA_FUNC_INLINE {
      constexpr bool kNext = decltype(next_tile)::value, kRelease = decltype(release_previous)::value;
      const int stage = read.index();
      PipelineState next = read;
      ++next;
      warpgroup_fence_operand(accum);
      for_each(make_int_sequence<kBlocks>{}, [&](auto block) CUTLASS_LAMBDA_FUNC_INLINE {
        constexpr int b = decltype(block)::value;
        if constexpr (b + 1 < kBlocks) {
          load_block(stage, Int<b + 1>{});
        } else if constexpr (kNext) {
          pipeline.consumer_wait(next);
          load_block(next.index(), Int<0>{});
        }
        warpgroup_arrive();
        cute::gemm(tiled_mma, tCrA(_, _, Int<b>{}), tCrB(_, _, Int<b>{}, stage), accum);
        warpgroup_commit_batch();
        warpgroup_wait<2>();
        if constexpr (kRelease && b == 1) {
          pipeline.consumer_release(release);
          ++release;
        }
      });
      warpgroup_fence_operand(accum);
      read = next;
    };

    pipeline.consumer_wait(read);
    load_block(read.index(), Int<0>{});
    if (k_tile_count == 1) {
      run_tile(false_type{}, false_type{});
    } else {
      run_tile(true_type{}, false_type{});
      CUTLASS_PRAGMA_NO_UNROLL
      for (int t = 1; t + 1 < k_tile_count; ++t) run_tile(true_type{}, true_type{});
      run_tile(false_type{}, true_type{});
    }
    warpgroup_fence_operand(accum);
  }
};

// Mainloop stages that fit beside the epilogue's shared memory: CUTLASS's count for its own
// collective (A and B tiles plus the stage barriers), with the mask tile added to every stage.
template <bool kTransposedA>
constexpr int masked_stages(int epilogue_bytes) {
  constexpr int kMaskBytes = (kTransposedA ? kBlkK : kBlkM) * kMaskWords * 4;
  constexpr int kStageBytes = (kBlkM + kBlkN) * kBlkK * int(sizeof(Element)) + kMaskBytes + 32;
  return (cutlass::gemm::collective::detail::sm90_smem_capacity_bytes - epilogue_bytes) / kStageBytes;
}

// Forward (kTransposedA false) or dX (true). D = acc [+ bias per M'] in bf16, column-major.
template <bool kTransposedA, class TileShape = Tile>
struct MaskedGemm {
  using Bias = fusion::Sm90ColBroadcast<0, TileShape, Element, float, Stride<_1, _0, int64_t>, 1, true>;
  using Tree = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, Element, float, kRound>, fusion::Sm90AccFetch, Bias>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,  // accumulator, compute
      void, cutlass::layout::ColumnMajor, kAlignment,                // no C
      Element, cutlass::layout::ColumnMajor, kAlignment, cutlass::epilogue::TmaWarpSpecializedCooperative,
      Tree>::CollectiveOp;
  static constexpr int kStages = masked_stages<kTransposedA>(int(sizeof(typename Epilogue::SharedStorage)));
  static_assert(kStages >= 2);
  using Mainloop = MaskedAMainloop<kTransposedA, kStages>;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  static_assert(sizeof(typename Kernel::SharedStorage) <= cutlass::gemm::collective::detail::sm90_smem_capacity_bytes);

  // Problem (M', N', K'), A, B, D as in the table at the top.
  static typename Gemm::Arguments arguments(const BitmaskGemmParams& p, const BitmaskLaunch& launch) {
    const int tokens = int(p.tokens), out = int(p.out), in = int(p.in);
    const int64_t d_rows = kTransposedA ? in : out;  // M'
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    using StrideA = typename Mainloop::StrideA;
    using StrideB = typename Mainloop::StrideB;
    if constexpr (kTransposedA) {
      args.problem_shape = make_shape(in, tokens, out, 1);
      args.mainloop.operands = {static_cast<const Element*>(p.weight), StrideA{_1{}, int64_t(in), int64_t(0)},
                                static_cast<const Element*>(p.grad), StrideB{int64_t(out), _1{}, int64_t(0)}};
    } else {
      args.problem_shape = make_shape(out, tokens, in, 1);
      args.mainloop.operands = {static_cast<const Element*>(p.weight), StrideA{int64_t(in), _1{}, int64_t(0)},
                                static_cast<const Element*>(p.x), StrideB{int64_t(in), _1{}, int64_t(0)}};
    }
    args.mainloop.words = p.words;
    args.mainloop.mask_rows = out;
    args.mainloop.mask_words = int32_t(words_per_row(in));
    typename Bias::Arguments bias{kTransposedA ? nullptr : static_cast<const Element*>(p.bias), Element(0),
                                  {_1{}, _0{}, int64_t(0)}};
    args.epilogue.thread = {{}, bias, {}};  // (acc fetch, bias, plus)
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = {_1{}, d_rows, int64_t(0)};
    args.epilogue.ptr_D = static_cast<Element*>(p.result);
    args.epilogue.dD = {_1{}, d_rows, int64_t(0)};
    args.hw_info.device_id = launch.device;
    args.hw_info.sm_count = launch.sm_count;
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
  // 128-bit vector loads of the mask: rows of a multiple of 128 bits (in % 128), 16-byte base.
  using Mask = fusion::Sm90AuxLoad<2, Shape<_64, _32>, cutlass::uint1b_t, Stride<int64_t, _1, int64_t>, void, void, 128,
                                   false>;
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
  static typename Gemm::Arguments arguments(const BitmaskGemmParams& p, const BitmaskLaunch& launch) {
    const int tokens = int(p.tokens), out = int(p.out), in = int(p.in);
    typename Gemm::Arguments args{};
    args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
    args.problem_shape = make_shape(out, in, tokens, 1);
    args.mainloop.ptr_A = static_cast<const Element*>(p.grad);
    args.mainloop.dA = typename Kernel::StrideA{_1{}, int64_t(out), int64_t(0)};
    args.mainloop.ptr_B = static_cast<const Element*>(p.x);
    args.mainloop.dB = typename Kernel::StrideB{_1{}, int64_t(in), int64_t(0)};
    const int64_t row_bits = words_per_row(in) * kWordBits;
    typename Mask::Arguments mask{reinterpret_cast<const cutlass::uint1b_t*>(p.words), cutlass::uint1b_t(0),
                                  {row_bits, _1{}, int64_t(0)}};
    args.epilogue.thread = {{}, mask, {}};  // (acc fetch, mask, keep)
    args.epilogue.ptr_C = nullptr;
    args.epilogue.dC = {int64_t(in), _1{}, int64_t(0)};
    args.epilogue.ptr_D = static_cast<Element*>(p.result);
    args.epilogue.dD = {int64_t(in), _1{}, int64_t(0)};
    args.hw_info.device_id = launch.device;
    args.hw_info.sm_count = launch.sm_count;
    return args;
  }
};

// Initializes and launches one configuration; false (nothing launched, or a launch error
// cleared) when CUTLASS refuses the problem or it would need a workspace (these kernels have
// none: no split-K, no reduction).
template <class Config>
bool run(const BitmaskGemmParams& p, const BitmaskLaunch& launch) {
  using Gemm = typename Config::Gemm;
  const auto args = Config::arguments(p, launch);
  if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return false;
  if (Gemm::get_workspace_size(args) != 0) return false;
  return initialize_and_run<Gemm>(args, nullptr, launch.stream);
}

}  // namespace ember::sparse::bitmask_impl
