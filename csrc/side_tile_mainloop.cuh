// A CUTLASS 4.2 sm90a GEMM mainloop that transforms its A operand element by element between
// shared memory and the tensor cores, reading per-row data from a "side tile" that travels with
// every pipeline stage. Used by the sparse bitmask GEMMs (the transform zeroes pruned weights;
// the side tile is the stage's mask words) and by the linear cross-entropy backward (the
// transform turns a logit into its softmax gradient; the side tile is each row's lse and scale).
//
// wgmma reads its A operand either from shared memory or from registers; from registers an
// element-wise function can run between the load and the MMA, so the transformed A never exists
// in memory. SideTileAMainloop is CUTLASS's TMA warp-specialized "A from registers" mainloop
// (MainloopSm90TmaGmmaRmemAWarpSpecialized: its types, TMA descriptors, producer tail and consumer
// tail are reused) with two parts of its own:
//   - load(): every stage also carries the side tile, loaded by TMA into the same stage and
//     counted in the same transaction bytes, so the consumers' wait on the stage covers it too.
//     The side tile is kSideWords = 4 32-bit words wide (16 bytes, the TMA box minimum; the side
//     tensor's rows must be a multiple of 16 bytes) with one row per row of A (kTransposedA
//     false: per M', the tile's 128 rows) or per K' index (kTransposedA true: the k tile's 64);
//     Transform::origin places it in the side tensor.
//   - mma(): for each 16-deep k-block, copy the A fragment shared -> registers, replace every
//     element by Transform::apply(element, side tile, m, k), then issue the wgmma. Block b+1 is
//     loaded before block b's wgmma is issued and at most two batches stay in flight, so a
//     fragment is rewritten only after the wgmma that read it (4 batches earlier) has retired; a
//     stage goes back to the producer once every wgmma reading its B tile has retired.
// Tiles 128×256×64 (M', N', K'), two consumer warp groups (cooperative), cluster 1×1, persistent;
// bf16 B and MMA, fp32 accumulation. A is stored as Transform::ElementA (bf16, or fp32 that the
// transform rounds to bf16 after its arithmetic), K-major, or M-major when kTransposedA (a
// transposed matrix read in place); B is K-major, or N-major when kMnMajorB. A and B go through
// TMA as raw bits (no conversion on the way).
#pragma once

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/layout.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/numeric_types.h"
#include "ember/common.h"

namespace ember::sm90 {

using namespace cute;

using Element = cutlass::bfloat16_t;
using Tile = Shape<_128, _256, _64>;
using Cluster = Shape<_1, _1, _1>;
using Schedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
constexpr int kBlkM = 128, kBlkN = 256, kBlkK = 64;
constexpr int kSideWords = 4;  // words per side-tile row: 16 bytes, TMA's minimum box width

// The CUTLASS "A from registers" collective SideTileAMainloop builds on.
template <bool kTransposedA, bool kMnMajorB, int Stages>
struct RmemABase {
  using StrideA = conditional_t<kTransposedA, Stride<_1, int64_t, int64_t>, Stride<int64_t, _1, int64_t>>;
  using StrideB = conditional_t<kMnMajorB, Stride<_1, int64_t, int64_t>, Stride<int64_t, _1, int64_t>>;
  using TiledMma = decltype(make_tiled_mma(GMMA::rs_op_selector<Element, Element, float, Tile, GMMA::Major::K,
                                                                kMnMajorB ? GMMA::Major::MN : GMMA::Major::K>(),
                                           Layout<Shape<_2, _1, _1>>{}));
  using SmemLayoutAtomA =
      decltype(cutlass::gemm::collective::detail::rs_smem_selector<kTransposedA ? GMMA::Major::MN : GMMA::Major::K,
                                                                   Element, _128, _64>());
  using SmemLayoutAtomB =
      decltype(cutlass::gemm::collective::detail::rs_smem_selector<kMnMajorB ? GMMA::Major::MN : GMMA::Major::K,
                                                                   Element, _256, _64>());
  using Collective = cutlass::gemm::collective::CollectiveMma<
      cutlass::gemm::MainloopSm90TmaGmmaRmemAWarpSpecialized<Stages, Cluster, Schedule>, Tile, Element, StrideA,
      Element, StrideB, TiledMma, SM90_TMA_LOAD, SmemLayoutAtomA, Copy_Atom<AutoVectorizingCopy, Element>,
      cute::identity, SM90_TMA_LOAD, SmemLayoutAtomB, void, cute::identity>;
};

// Transform: the element function and where its side tile comes from.
//   typename Transform::ElementA                        A as stored: bf16 or float
//   typename Transform::Params                          device constants (trivially copyable)
//   static tuple<int, int> origin<kTransposedA>(m0, k0) side-tensor (row, word) of the side tile
//                                                       for the A tile starting at (m0, k0)
//   static Element apply<kTransposedA>(a, side, m, k, params)
//                                                       A element (m, k) of the tile (a: ElementA),
//                                                       as the bf16 the wgmma reads; side(r, w)
//                                                       the stage's side tile (uint32 words)
template <bool kTransposedA, bool kMnMajorB, int Stages, class Transform>
struct SideTileAMainloop : RmemABase<kTransposedA, kMnMajorB, Stages>::Collective {
  using Base = typename RmemABase<kTransposedA, kMnMajorB, Stages>::Collective;
  using typename Base::MainloopPipeline;
  using typename Base::PipelineState;
  using typename Base::SmemLayoutB;
  using typename Base::StrideA;
  using typename Base::StrideB;
  using typename Base::TiledMma;

  // A as stored (bf16 or fp32), moved as raw bits.
  using ElementA = typename Transform::ElementA;
  using RawA = uint_bit_t<sizeof_bits_v<ElementA>>;
  using SmemLayoutAtomA =
      conditional_t<kTransposedA, GMMA::Layout_MN_SW128_Atom<RawA>, GMMA::Layout_K_SW128_Atom<RawA>>;
  using SmemLayoutA = decltype(tile_to_shape(SmemLayoutAtomA{}, make_shape(Int<kBlkM>{}, Int<kBlkK>{}, Int<Stages>{}),
                                             conditional_t<kTransposedA, Step<_2, _1, _3>, Step<_1, _2, _3>>{}));
  static constexpr size_t SmemAlignmentA = cutlass::detail::alignment_for_swizzle(SmemLayoutA{});
  using TmaA = decltype(make_tma_copy_A_sm90(
      SM90_TMA_LOAD{}, make_tensor(static_cast<const RawA*>(nullptr), repeat_like(StrideA{}, int32_t(0)), StrideA{}),
      SmemLayoutA{}(_, _, Int<0>{}), Tile{}, Cluster{}));
  using TmaB = typename Base::Params::TMA_B;
  using RawB = uint16_t;

  static constexpr int kSideRows = kTransposedA ? kBlkK : kBlkM;
  using SmemLayoutSide = Layout<Shape<Int<kSideRows>, Int<kSideWords>>, Stride<Int<kSideWords>, _1>>;
  using SmemLayoutSidePipe = Layout<Shape<Int<kSideRows>, Int<kSideWords>, Int<Stages>>,
                                    Stride<Int<kSideWords>, _1, Int<kSideRows * kSideWords>>>;
  static constexpr uint32_t kSideBytes = kSideRows * kSideWords * sizeof(uint32_t);
  static constexpr uint32_t kTransactionBytes =
      uint32_t(kBlkM * kBlkK * sizeof(RawA) + kBlkN * kBlkK * sizeof(RawB)) + kSideBytes;
  using SideGmem =
      decltype(make_tensor(make_gmem_ptr(static_cast<const uint32_t*>(nullptr)),
                           make_layout(make_shape(int32_t(0), int32_t(0)), make_stride(int64_t(0), _1{}))));
  using TmaSide = decltype(make_tma_copy(SM90_TMA_LOAD{}, std::declval<SideGmem>(), SmemLayoutSide{}));

  struct SharedStorage {
    struct TensorStorage : aligned_struct<cute::max(SmemAlignmentA, Base::SmemAlignmentB), _0> {
      array_aligned<RawA, cosize_v<SmemLayoutA>, SmemAlignmentA> smem_A;
      array_aligned<typename TiledMma::ValTypeB, cosize_v<SmemLayoutB>, Base::SmemAlignmentB> smem_B;
      array_aligned<uint32_t, cosize_v<SmemLayoutSidePipe>, 128> smem_side;
    } tensors;
    typename Base::PipelineStorage pipeline;
  };
  using TensorStorage = typename SharedStorage::TensorStorage;
  using PipelineStorage = typename Base::PipelineStorage;

  struct Arguments {
    const ElementA* ptr_A = nullptr;
    StrideA dA{};
    const Element* ptr_B = nullptr;
    StrideB dB{};
    const void* side = nullptr;  // side_rows × side_words 32-bit words, row-major
    int32_t side_rows = 0, side_words = 0;
    typename Transform::Params transform{};
  };

  struct Params {
    TmaA tma_load_a;
    TmaB tma_load_b;
    TmaSide tma_load_side;
    uint32_t tma_transaction_bytes;  // read by the kernel for the stages' barriers
    int32_t side_rows, side_words;
    typename Transform::Params transform;
  };

  static SideGmem side_tensor(Arguments const& args) {
    return make_tensor(
        make_gmem_ptr(static_cast<const uint32_t*>(args.side)),
        make_layout(make_shape(args.side_rows, args.side_words), make_stride(int64_t(args.side_words), _1{})));
  }

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& shape, Arguments const& args, void* /*workspace*/) {
    auto [M, N, K, L] = append<4>(shape, 1);
    Tensor a = make_tensor(reinterpret_cast<const RawA*>(args.ptr_A), make_layout(make_shape(M, K, L), args.dA));
    Tensor b = make_tensor(reinterpret_cast<const RawB*>(args.ptr_B), make_layout(make_shape(N, K, L), args.dB));
    return {make_tma_copy_A_sm90(SM90_TMA_LOAD{}, a, SmemLayoutA{}(_, _, Int<0>{}), Tile{}, Cluster{}),
            make_tma_copy_B_sm90(SM90_TMA_LOAD{}, b, SmemLayoutB{}(_, _, Int<0>{}), Tile{}, Cluster{}),
            make_tma_copy(SM90_TMA_LOAD{}, side_tensor(args), SmemLayoutSide{}),
            kTransactionBytes,
            args.side_rows,
            args.side_words,
            args.transform};
  }

  // TMA's requirements on what the descriptors cannot check themselves: 16-byte aligned bases
  // and rows (CUTLASS's check_alignment on the strides' extents), 4 words per side-tile row.
  template <class ProblemShape>
  static bool can_implement(ProblemShape const& shape, Arguments const& args) {
    auto [M, N, K, L] = append<4>(shape, 1);
    return aligned16(args.ptr_A) && aligned16(args.ptr_B) && aligned16(args.side) &&
           cutlass::detail::check_alignment<128 / sizeof_bits_v<ElementA>>(make_shape(M, K, L), StrideA{}) &&
           cutlass::detail::check_alignment<128 / sizeof_bits_v<Element>>(make_shape(N, K, L), StrideB{}) &&
           args.side_rows > 0 && args.side_words > 0 && args.side_words % kSideWords == 0;
  }

  CUTLASS_DEVICE static void prefetch_tma_descriptors(Params const& params) {
    prefetch_tma_descriptor(params.tma_load_a.get_tma_descriptor());
    prefetch_tma_descriptor(params.tma_load_b.get_tma_descriptor());
    prefetch_tma_descriptor(params.tma_load_side.get_tma_descriptor());
  }

  // The TMA coordinate tensors of A and B, tiled: (BLK_M, BLK_K, m, k, l) and (BLK_N, BLK_K, n, k, l).
  template <class ProblemShape_MNKL>
  CUTLASS_DEVICE auto load_init(ProblemShape_MNKL const& shape, Params const& params) const {
    auto [M, N, K, L] = shape;
    Tensor mA = params.tma_load_a.get_tma_tensor(make_shape(M, K, L));
    Tensor mB = params.tma_load_b.get_tma_tensor(make_shape(N, K, L));
    return cute::make_tuple(local_tile(mA, Tile{}, make_coord(_, _, _), Step<_1, Underscore, _1>{}),
                            local_tile(mB, Tile{}, make_coord(_, _, _), Step<Underscore, _1, _1>{}));
  }

  // Producer: one elected thread issues the A, B and side-tile TMA loads of each k tile.
  template <class TensorA, class TensorB, class KTileIterator, class BlockCoord>
  CUTLASS_DEVICE void load(Params const& params, MainloopPipeline pipeline, PipelineState write,
                           cute::tuple<TensorA, TensorB> const& inputs, BlockCoord const& blk_coord,
                           KTileIterator k_tile_iter, int k_tile_count, int /*thread_idx*/,
                           uint32_t /*block_rank_in_cluster*/, TensorStorage& smem) {
    if (!elect_one_sync()) return;
    Tensor sA = as_position_independent_swizzle_tensor(make_tensor(make_smem_ptr(smem.smem_A.data()), SmemLayoutA{}));
    Tensor sB = as_position_independent_swizzle_tensor(make_tensor(make_smem_ptr(smem.smem_B.data()), SmemLayoutB{}));
    Tensor sS = make_tensor(make_smem_ptr(smem.smem_side.data()), SmemLayoutSidePipe{});
    auto [m_coord, n_coord, k_coord, l_coord] = blk_coord;
    Tensor gA = get<0>(inputs)(_, _, m_coord, _, l_coord);  // (BLK_M, BLK_K, k)
    Tensor gB = get<1>(inputs)(_, _, n_coord, _, l_coord);  // (BLK_N, BLK_K, k)
    auto tma_a = params.tma_load_a.get_slice(0);
    auto tma_b = params.tma_load_b.get_slice(0);
    auto tma_s = params.tma_load_side.get_slice(0);
    Tensor tAgA = tma_a.partition_S(gA);
    Tensor tAsA = tma_a.partition_D(sA);
    Tensor tBgB = tma_b.partition_S(gB);
    Tensor tBsB = tma_b.partition_D(sB);
    Tensor mS = params.tma_load_side.get_tma_tensor(make_shape(params.side_rows, params.side_words));
    const int m0 = int(m_coord) * kBlkM;

    CUTLASS_PRAGMA_NO_UNROLL
    for (; k_tile_count > 0; --k_tile_count, ++k_tile_iter) {
      pipeline.producer_acquire(write);
      auto* barrier = pipeline.producer_get_barrier(write);
      const int stage = write.index();
      const int k_tile = *k_tile_iter;
      copy(params.tma_load_a.with(*barrier), tAgA(_, _, _, k_tile), tAsA(_, _, _, stage));
      copy(params.tma_load_b.with(*barrier), tBgB(_, _, _, k_tile), tBsB(_, _, _, stage));
      const auto origin = Transform::template origin<kTransposedA>(m0, k_tile * kBlkK);
      Tensor gS = local_tile(domain_offset(origin, mS), Shape<Int<kSideRows>, Int<kSideWords>>{}, make_coord(0, 0));
      copy(params.tma_load_side.with(*barrier), tma_s.partition_S(gS), tma_s.partition_D(sS(_, _, stage)));
      ++write;
    }
  }

  // Consumers: A fragments transformed in registers, B from shared memory. Leaves the last k
  // tile's stage to Base::mma_tail, which releases it once every wgmma has retired.
  template <class FrgTensorC>
  CUTLASS_DEVICE void mma(MainloopPipeline pipeline, PipelineState read, FrgTensorC& accum, int k_tile_count,
                          int thread_idx, TensorStorage& smem, Params const& params) {
    Tensor sA = as_position_independent_swizzle_tensor(make_tensor(make_smem_ptr(smem.smem_A.data()), SmemLayoutA{}));
    Tensor sB = make_tensor(make_smem_ptr(smem.smem_B.data()), SmemLayoutB{});  // wgmma descriptors
    Tensor sS = make_tensor(make_smem_ptr(smem.smem_side.data()), SmemLayoutSidePipe{});

    TiledMma tiled_mma;
    auto thread_mma = tiled_mma.get_thread_slice(thread_idx);
    const int warp_group = __shfl_sync(0xFFFFFFFF, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    constexpr int kWarpGroups = size(TiledMma{}) / cutlass::NumThreadsPerWarpGroup;
    auto group_mma =
        tiled_mma.get_slice(make_layout(Int<kWarpGroups>{}, Int<cutlass::NumThreadsPerWarpGroup>{})(warp_group));

    Tensor tCrA = thread_mma.partition_fragment_A(sA(_, _, Int<0>{}));  // (MMA, MMA_M, MMA_K) bf16, the wgmma's
    Tensor tCrA_raw = make_fragment_like<RawA>(tCrA);                   // the same, as stored
    Tensor tCcA = thread_mma.partition_A(make_identity_tensor(make_shape(Int<kBlkM>{}, Int<kBlkK>{})));  // (m, k)
    Tensor tCsB = group_mma.partition_B(sB);  // (MMA, MMA_N, MMA_K, PIPE)
    Tensor tCrB = group_mma.make_fragment_B(tCsB);
    auto copy_a = make_tiled_copy_A(Copy_Atom<AutoVectorizingCopy, RawA>{}, tiled_mma);
    auto thread_copy_a = copy_a.get_thread_slice(thread_idx);
    Tensor tCsA_copy = thread_copy_a.partition_S(sA);     // (CPY, CPY_M, CPY_K, PIPE)
    Tensor tCrA_copy = thread_copy_a.retile_D(tCrA_raw);  // (CPY, CPY_M, CPY_K)
    constexpr int kBlocks = size<2>(tCrA);
    static_assert(kBlocks == 4 && kBlocks == kBlkK / 16, "the wgmma pipeline below assumes 4 k-blocks per tile");
    static_assert(decltype(size(tCrA(_, _, 0)) == size(tCcA(_, _, 0)))::value);

    // Block b of stage `stage` into registers, transformed.
    auto load_block = [&](int stage, auto b) CUTLASS_LAMBDA_FUNC_INLINE {
      copy(copy_a, tCsA_copy(_, _, b, stage), tCrA_copy(_, _, b));
      Tensor raw = tCrA_raw(_, _, b);
      Tensor frag = tCrA(_, _, b);
      Tensor coord = tCcA(_, _, b);
      Tensor side = sS(_, _, stage);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < size(frag); ++i) {
        ElementA a;
        RawA bits = raw(i);
        memcpy(&a, &bits, sizeof(a));
        frag(i) =
            Transform::template apply<kTransposedA>(a, side, get<0>(coord(i)), get<1>(coord(i)), params.transform);
      }
    };

    // Accumulators cleared here and every wgmma accumulates: no scale-out predicate to vary
    // between wgmmas (ptxas serializes wgmmas whose inputs it sees defined mid-pipeline).
    clear(accum);
    tiled_mma.accumulate_ = GMMA::ScaleOut::One;
    warpgroup_fence_operand(accum);

    // One k tile; kNext: the last block prefetches block 0 of the next tile; kRelease: at block 1
    // the previous tile's batches have all retired and its stage is released. First, middle and
    // last tiles are separate instantiations, so the wgmma pipeline has no run-time branches.
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
// collective (A and B tiles plus the stage barriers), with the side tile added to every stage.
template <bool kTransposedA, class ElementA>
constexpr int side_tile_stages(int epilogue_bytes) {
  constexpr int kSideBytes = (kTransposedA ? kBlkK : kBlkM) * kSideWords * 4;
  constexpr int kStageBytes =
      kBlkM * kBlkK * int(sizeof(ElementA)) + kBlkN * kBlkK * int(sizeof(Element)) + kSideBytes + 32;
  return (cutlass::gemm::collective::detail::sm90_smem_capacity_bytes - epilogue_bytes) / kStageBytes;
}

}  // namespace ember::sm90
