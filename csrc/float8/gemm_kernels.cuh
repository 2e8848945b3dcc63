// CUTLASS 4.2 (sm90a) templates shared by the scaled fp8 GEMM kernel files. Each gemm_*.cu file
// instantiates exactly one configuration (one sm90 instantiation costs minutes of nvcc), so the
// files build in parallel and a change to one kernel rebuilds one file.
//
// Operands, in CUTLASS's (M, N, K) convention: A = a, M×K row-major (K-major); B = b, which we
// store N×K row-major, i.e. K-major, which CUTLASS calls ColumnMajor for B; D = out, M×N
// row-major bf16 (no C operand: ElementC = void). TMA needs 16-byte aligned rows: K % 16 for the
// fp8 operands, N % 8 for bf16 D; gemm_cuda checks those and the base pointers' alignment
// (CUTLASS's can_implement checks only shapes, and a failed TMA descriptor is not reported).
// Ragged M (and N) is handled by CUTLASS: TMA loads zero-fill and TMA stores clip outside the
// problem, and the epilogue's broadcast loads are predicated on the problem's residue.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/detail/blockwise_scale_layout.hpp"
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
#include "gemm_kernels.h"

namespace ember::float8::gemm_impl {

namespace fusion = cutlass::epilogue::fusion;
using cute::_0;
using cute::_1;
using cute::_128;
using cute::_2;
using cute::_64;

using ElementB = cutlass::float_e4m3_t;
using ElementD = cutlass::bfloat16_t;
using LayoutA = cutlass::layout::RowMajor;     // a: M×K, K contiguous
using LayoutB = cutlass::layout::ColumnMajor;  // b: N×K, K contiguous ("column-major" K×N)
using LayoutD = cutlass::layout::RowMajor;     // out: M×N, N contiguous
constexpr int kAlignmentAB = 16;               // fp8 elements per 16 bytes
constexpr int kAlignmentD = 8;                 // bf16 elements per 16 bytes
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// Packed strides of the row-major operands (batch stride unused: L = 1).
template <class Stride>
Stride packed_stride(int64_t rows, int64_t cols) {
  return Stride{cols, _1{}, rows * cols};
}

// The arguments every configuration shares: problem shape, A, B, D (no C), the device; the
// caller adds its epilogue (and blockwise scale) arguments.
template <class Gemm, class ElementA>
typename Gemm::Arguments operand_arguments(const GemmParams& p, int device, int sm_count) {
  using Kernel = typename Gemm::GemmKernel;
  const int m = int(p.m), n = int(p.n), k = int(p.k);
  typename Gemm::Arguments args{};
  args.mode = cutlass::gemm::GemmUniversalMode::kGemm;
  args.problem_shape = {m, n, k, 1};
  args.mainloop.ptr_A = reinterpret_cast<const ElementA*>(p.a);
  args.mainloop.dA = packed_stride<typename Kernel::StrideA>(m, k);
  args.mainloop.ptr_B = reinterpret_cast<const ElementB*>(p.b);
  args.mainloop.dB = packed_stride<typename Kernel::StrideB>(n, k);
  args.epilogue.ptr_C = nullptr;
  args.epilogue.dC = packed_stride<typename Kernel::StrideC>(m, n);
  args.epilogue.ptr_D = reinterpret_cast<ElementD*>(p.out);
  args.epilogue.dD = packed_stride<typename Kernel::StrideD>(m, n);
  args.hw_info.device_id = device;
  args.hw_info.sm_count = sm_count;
  return args;
}

// ---- scaled (tensorwise / rowwise) -------------------------------------------------------------
//
// Epilogue visitor tree: out = bf16(fma(a_scale[m], b_scale[n] * acc, bias[n])).
// a_scale is a column broadcast (one value per output row m), b_scale and bias row broadcasts
// (one value per output column n). The scales use CUTLASS's dynamic broadcast: the M (resp. N)
// stride is a run-time bool, true for a vector of M (N) floats, false for a scalar (every m or n
// reads element 0; Sm90{Col,Row}Broadcast's IsDynamicBroadcast path, the one
// PerColLinCombPerRowBias uses for alpha/beta). So tensorwise needs neither a second
// instantiation nor a workspace copy of the scalars. Alignment 1: per-element loads (a thread's
// accumulator rows are not contiguous anyway). bias: a static row vector; a null pointer makes
// Sm90RowBroadcast fill its null_default (0) instead of loading.
template <class TileShape>
struct ScaledTree {
  using AScale = fusion::Sm90ColBroadcast<0, TileShape, float, float, cute::Stride<bool, _0, int64_t>, 1>;
  using BScale = fusion::Sm90RowBroadcast<0, TileShape, float, float, cute::Stride<_0, bool, int64_t>, 1>;
  using Bias = fusion::Sm90RowBroadcast<0, TileShape, float, float, cute::Stride<_0, _1, int64_t>>;
  using AccTimesB =
      fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>, BScale, fusion::Sm90AccFetch>;
  using Tree = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::homogeneous_multiply_add, ElementD, float, kRound>, AScale,
                               AccTimesB, Bias>;

  static typename Tree::Arguments arguments(const GemmParams& p) {
    const bool vectors = p.recipe == GemmRecipe::kRowwise;  // else kTensorwise: scalars
    typename AScale::Arguments a{p.a_scale, 0.0f, {vectors, _0{}, int64_t(0)}};
    typename BScale::Arguments b{p.b_scale, 0.0f, {_0{}, vectors, int64_t(0)}};
    typename Bias::Arguments bias{p.bias, 0.0f, {_0{}, _1{}, int64_t(0)}};
    typename AccTimesB::Arguments acc_b{b, {}, {}};
    return typename Tree::Arguments{a, acc_b, bias, {}};
  }
};

template <class ElementA, class TileShape, class ClusterShape, class MainloopSchedule, class EpilogueSchedule>
struct ScaledGemm {
  using Fusion = ScaledTree<TileShape>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,  // accumulator, compute
      void, LayoutD, kAlignmentD,                                     // no C
      ElementD, LayoutD, kAlignmentD, EpilogueSchedule, typename Fusion::Tree>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementA, LayoutA, kAlignmentAB, ElementB, LayoutB,
      kAlignmentAB, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const GemmParams& p, int device, int sm_count) {
    auto args = operand_arguments<Gemm, ElementA>(p, device, sm_count);
    args.epilogue.thread = Fusion::arguments(p);
    return args;
  }
};

// ---- blockwise ---------------------------------------------------------------------------------
//
// CUTLASS's blockwise-scaled fp8 mainloop (KernelTmaWarpSpecializedCooperativeFP8Blockwise, as
// in example 67): every 128 of K the partial sums of a tile are multiplied by sfa[m] · sfb[n]
// of that K block and added into the fp32 accumulators. Scale layouts: Sm90BlockwiseScaleConfig
// <ScaleGranularityM = 1, ScaleGranularityN, ScaleGranularityK = 128, K-major, K-major> gives
// SFA ((1, M), (128, ⌈K/128⌉)) : ((0, ⌈K/128⌉), (0, 1)), i.e. exactly our row-major
// (M, ⌈K/128⌉) a_scale, and SFB ((gN, ⌈N/gN⌉), (128, ⌈K/128⌉)) : ((0, ⌈K/128⌉), (0, 1)), our
// row-major (⌈N/gN⌉, ⌈K/128⌉) b_scale (gN = 128: kBlockwise, gN = 1: kBlockwiseWgrad). K-major
// scales take the collective's cp.async path (its TMA path is for MN-major scales only): each
// k-tile the producer's aux warp gathers the tile's scales with per-element predicates against
// the scale tensor's shape, so ragged M / N / K read nothing out of bounds. No workspace copy or
// transpose is needed.
// Epilogue: out = bf16(acc + bias[n]), bias a nullable row broadcast.
// (TileShape and ClusterShape are template parameters, defaulted, so that every type below is
// dependent: GCC rejects the non-dependent epilogue builder inside a class template.)
template <int ScaleGranularityN, class TileShape = cute::Shape<_128, _128, _128>,
          class ClusterShape = cute::Shape<_1, _2, _1>>
struct BlockwiseGemm {
  using ElementA = cutlass::float_e4m3_t;
  using ScaleConfig =
      cutlass::detail::Sm90BlockwiseScaleConfig<1, ScaleGranularityN, 128, cute::GMMA::Major::K, cute::GMMA::Major::K>;
  using LayoutSFA = decltype(ScaleConfig::deduce_layoutSFA());
  using LayoutSFB = decltype(ScaleConfig::deduce_layoutSFB());

  using Bias = fusion::Sm90RowBroadcast<0, TileShape, float, float, cute::Stride<_0, _1, int64_t>>;
  using Tree = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, ElementD, float, kRound>, Bias, fusion::Sm90AccFetch>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutD, kAlignmentD, ElementD, LayoutD,
      kAlignmentD, cutlass::epilogue::TmaWarpSpecializedCooperative, Tree>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementA, cute::tuple<LayoutA, LayoutSFA>, kAlignmentAB,
      ElementB, cute::tuple<LayoutB, LayoutSFB>, kAlignmentAB, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8Blockwise>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static_assert(Mainloop::ScaleGranularityM == 1 && Mainloop::ScaleGranularityN == ScaleGranularityN &&
                Mainloop::ScaleGranularityK == 128);
  static_assert(!Mainloop::MMajorSFA && !Mainloop::NMajorSFB, "scales must be K-major (row-major per operand row)");

  static typename Gemm::Arguments arguments(const GemmParams& p, int device, int sm_count) {
    const auto shape = cute::make_shape(int(p.m), int(p.n), int(p.k), 1);
    auto args = operand_arguments<Gemm, ElementA>(p, device, sm_count);
    args.mainloop.ptr_SFA = p.a_scale;
    args.mainloop.layout_SFA = ScaleConfig::tile_atom_to_shape_SFA(shape);
    args.mainloop.ptr_SFB = p.b_scale;
    args.mainloop.layout_SFB = ScaleConfig::tile_atom_to_shape_SFB(shape);
    args.epilogue.thread =
        typename Tree::Arguments{typename Bias::Arguments{p.bias, 0.0f, {_0{}, _1{}, int64_t(0)}}, {}, {}};
    return args;
  }
};

// The two functions a kernel file exports, for a configuration G (ScaledGemm or BlockwiseGemm).
template <class G>
size_t workspace_bytes(const GemmParams& p, int sm_count) {
  return G::Gemm::get_workspace_size(G::arguments(p, 0, sm_count));
}

template <class G>
bool run(const GemmParams& p, const CutlassLaunch& launch) {
  return check_and_run<typename G::Gemm>(G::arguments(p, launch.device, launch.sm_count), launch);
}

// Defines a kernel file's two functions (gemm_kernels.h), name_workspace_bytes and name, for the
// configuration given after the name.
#define EMBER_FP8_GEMM_KERNEL(name, ...)                             \
  size_t name##_workspace_bytes(const GemmParams& p, int sm_count) { \
    return workspace_bytes<__VA_ARGS__>(p, sm_count);                \
  }                                                                  \
  bool name(const GemmParams& p, const CutlassLaunch& launch) { return run<__VA_ARGS__>(p, launch); }

}  // namespace ember::float8::gemm_impl
