// CUTLASS 4.2 (sm90a) grouped-GEMM template shared by the grouped_{forward,dgrad,wgrad}.cu kernel
// files (one instantiation each: an sm90 instantiation costs minutes of nvcc), and the helper
// that stages the per-group arrays in the caller's workspace and launches.
//
// Kernel: CUTLASS's sm90 grouped GEMM (GroupProblemShape<(M, N, K)>, pointer-array TMA
// warp-specialized persistent cooperative mainloop and epilogue, the group tile scheduler).
// 128×128×64 bf16 tiles, cluster 1×1×1, fp32 accumulators, D bf16 row-major. Every group has its
// own M, N, K, base pointers and leading dimensions; the kernel rewrites its TMA descriptors on
// the device whenever a CTA moves to a tile of another group (descriptors live in CUTLASS's
// workspace, one set per SM). Ragged M / N / K are handled by TMA (zero-filled loads, clipped
// stores); what TMA needs (16-byte aligned bases and leading dimensions; CUTLASS's can_implement
// also wants each operand's contiguous extent a multiple of 8 elements) is checked by
// grouped_gemm.cu before any kernel function is called, and again by can_implement here.
//
// Epilogue: D = alpha·acc + beta·C with alpha = 1 and beta = accumulate ? 1 : 0. C is D: the C
// pointer and stride arrays are the D arrays (same device memory), so accumulate reads each D
// tile by TMA before the same CTA overwrites it (a tile's C and D subtiles coincide, and tiles of
// one launch are disjoint because groups write disjoint D regions). With beta = 0 CUTLASS's
// linear combination skips the C load entirely (Sm90TreeVisitor<homogeneous_multiply_add, ...>
// ::is_C_load_needed is false when the beta scalar is zero, and the C registers are cleared), so
// an uninitialized D (NaN bit patterns included) is never read. The C array is never null, which
// also keeps the host-side C TMA descriptor (built from the array's address, never used for
// loads) valid on drivers that reject a null global address.
//
// Workspace (device memory of the caller, `launch.workspace`), from its first 256-byte boundary:
//   problem sizes  count × Shape<int, int, int>   (device copy of the host problem shapes)
//   ptr_A          count × const bf16*
//   ptr_B          count × const bf16*
//   ptr_D          count × bf16*                 (also ptr_C)
//   dA, dB, dD     count × the kernel's per-group stride types (dD also dC)
//   (each array starts at a 64-byte boundary; then, at a 256-byte boundary:)
//   CUTLASS workspace (Gemm::get_workspace_size: per-SM tensormaps of A, B, C, D; depends only on
//   the SM count)
// The arrays are built on the host in one contiguous buffer and copied with ONE cudaMemcpyAsync
// on the launch stream. The buffer is pageable, so the copy is staged by the driver before
// cudaMemcpyAsync returns and the buffer may (and does) die when this function returns. The
// device copy is read by the kernel, which is ordered after the copy on the same stream; a later
// call reusing the same workspace on the same stream is ordered after this kernel. (Pageable
// copies are not allowed while the stream is being captured into a CUDA graph: the copy then
// fails, and this returns false with the error cleared.) The host problem-shape array that
// CUTLASS reads on the host (can_implement, grid size) is alive until run() returns.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/numeric_types.h"

#include "cutlass_run.cuh"
#include "grouped_kernels.h"

namespace ember::sparse::grouped_impl {

using Element = cutlass::bfloat16_t;                                                // A, B, C, D
using ProblemShape = cutlass::gemm::GroupProblemShape<cute::Shape<int, int, int>>;  // (M, N, K) per group
using LayoutD = cutlass::layout::RowMajor;                                          // D (and C): M×N, N contiguous
constexpr int kAlignment = 8;                                                       // bf16 elements per 16 bytes (TMA)
constexpr size_t kArrayAlign = 64;                                                  // start of each per-group array
constexpr size_t kWorkspaceAlign = 256;  // base, and CUTLASS's part (tensormaps: 64)

constexpr size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// One grouped GEMM configuration. LayoutA / LayoutB are CUTLASS's per-group layout tags (the
// kernel types take pointers to them: per-group strides). Tile and Cluster are template
// parameters, defaulted, so that every type below is dependent (GCC rejects a non-dependent
// epilogue builder inside a class template).
template <class LayoutA, class LayoutB, class Tile = cute::Shape<cute::_128, cute::_128, cute::_64>,
          class Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>>
struct GroupedGemm {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float,  // accumulator, compute
      Element, LayoutD*, kAlignment,                                  // C (= D)
      Element, LayoutD*, kAlignment,                                  // D
      cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative,
      cutlass::epilogue::fusion::LinearCombination<Element, float, Element, float>>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, LayoutA*, kAlignment, Element, LayoutB*, kAlignment,
      float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  using Shape = typename ProblemShape::UnderlyingProblemShape;
  using StrideA = typename Kernel::InternalStrideA;
  using StrideB = typename Kernel::InternalStrideB;
  using StrideC = typename Kernel::InternalStrideC;
  using StrideD = typename Kernel::InternalStrideD;
  static_assert(Kernel::IsGroupedGemmKernel);
  static_assert(std::is_same_v<typename Kernel::ElementC, Element> &&
                std::is_same_v<typename Kernel::ElementD, Element>);
  static_assert(std::is_same_v<StrideC, StrideD>, "C aliases D's stride array");
  static_assert(std::is_trivially_copyable_v<Shape> && std::is_trivially_copyable_v<StrideA> &&
                std::is_trivially_copyable_v<StrideB> && std::is_trivially_copyable_v<StrideD>);
};

// A per-group stride (rank 3: the two matrix modes and a static batch mode) with the leading
// dimension `ld` in its one dynamic matrix mode; the other matrix mode is the static unit stride.
template <class Stride>
Stride leading_stride(int64_t ld) {
  static_assert(cute::rank_v<Stride> == 3);
  using S0 = std::remove_cvref_t<decltype(cute::get<0>(std::declval<Stride>()))>;
  using S1 = std::remove_cvref_t<decltype(cute::get<1>(std::declval<Stride>()))>;
  using S2 = std::remove_cvref_t<decltype(cute::get<2>(std::declval<Stride>()))>;
  static_assert(cute::is_static<S0>::value != cute::is_static<S1>::value, "one unit mode, one leading dimension");
  static_assert(cute::is_static<S2>::value, "batch mode is static (one matrix per group)");
  Stride s{};
  if constexpr (cute::is_static<S0>::value) {
    static_assert(S0::value == 1);
    cute::get<1>(s) = ld;
  } else {
    static_assert(S1::value == 1);
    cute::get<0>(s) = ld;
  }
  return s;
}

// Byte offsets of the per-group arrays inside the (aligned) workspace.
template <class G>
struct ArrayLayout {
  size_t shapes = 0, ptr_a = 0, ptr_b = 0, ptr_d = 0, stride_a = 0, stride_b = 0, stride_d = 0, bytes = 0;

  explicit ArrayLayout(int count) {
    const size_t n = static_cast<size_t>(count);
    size_t at = 0;
    auto take = [&](size_t element_bytes) {
      const size_t offset = at;
      at = round_up(at + n * element_bytes, kArrayAlign);
      return offset;
    };
    shapes = take(sizeof(typename G::Shape));
    ptr_a = take(sizeof(const Element*));
    ptr_b = take(sizeof(const Element*));
    ptr_d = take(sizeof(Element*));
    stride_a = take(sizeof(typename G::StrideA));
    stride_b = take(sizeof(typename G::StrideB));
    stride_d = take(sizeof(typename G::StrideD));
    bytes = round_up(at, kWorkspaceAlign);  // CUTLASS's workspace follows
  }
};

// The kernel arguments for arrays at `dev` (device addresses; not dereferenced on the host).
template <class G>
typename G::Gemm::Arguments grouped_arguments(int count, unsigned char* dev, const typename G::Shape* host_shapes,
                                              bool accumulate, int device, int sm_count) {
  const ArrayLayout<G> at(count);
  const uintptr_t base = reinterpret_cast<uintptr_t>(dev);  // integer math: dev may be null (sizing only)
  auto* shapes = reinterpret_cast<typename G::Shape*>(base + at.shapes);
  auto* ptr_a = reinterpret_cast<const Element**>(base + at.ptr_a);
  auto* ptr_b = reinterpret_cast<const Element**>(base + at.ptr_b);
  auto* ptr_d = reinterpret_cast<Element**>(base + at.ptr_d);
  auto* stride_a = reinterpret_cast<typename G::StrideA*>(base + at.stride_a);
  auto* stride_b = reinterpret_cast<typename G::StrideB*>(base + at.stride_b);
  auto* stride_d = reinterpret_cast<typename G::StrideD*>(base + at.stride_d);

  typename G::Gemm::Arguments args{};
  args.mode = cutlass::gemm::GemmUniversalMode::kGrouped;
  args.problem_shape = ProblemShape{count, shapes, host_shapes};
  args.mainloop.ptr_A = ptr_a;
  args.mainloop.dA = stride_a;
  args.mainloop.ptr_B = ptr_b;
  args.mainloop.dB = stride_b;
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = accumulate ? 1.0f : 0.0f;
  args.epilogue.thread.alpha_ptr = nullptr;
  args.epilogue.thread.beta_ptr = nullptr;
  args.epilogue.thread.alpha_ptr_array = nullptr;
  args.epilogue.thread.beta_ptr_array = nullptr;
  args.epilogue.ptr_C = const_cast<const Element**>(ptr_d);  // C = D (read only when beta != 0)
  args.epilogue.dC = stride_d;
  args.epilogue.ptr_D = ptr_d;
  args.epilogue.dD = stride_d;
  args.hw_info.device_id = device;
  args.hw_info.sm_count = sm_count;
  return args;
}

// CUTLASS's workspace: per-SM tensormaps (and zero-size fusion / scheduler parts), a function of
// count and sm_count only; computed from arguments of the real count and SM count.
template <class G>
size_t cutlass_workspace_bytes(int count, int sm_count) {
  unsigned char* const no_arrays = nullptr;
  return G::Gemm::get_workspace_size(grouped_arguments<G>(count, no_arrays, nullptr, false, 0, sm_count));
}

// Everything a launch of `count` groups needs, with slack to align an arbitrary base pointer.
template <class G>
size_t workspace_bytes(int count, int sm_count) {
  if (count <= 0 || sm_count <= 0) return 0;
  return kWorkspaceAlign + ArrayLayout<G>(count).bytes + cutlass_workspace_bytes<G>(count, sm_count);
}

// Stages the per-group arrays, then initializes and launches the kernel; false (no kernel
// launched, CUDA errors of ours cleared) when CUTLASS refuses the batch or a CUDA call fails. All
// refusals that depend on the groups (can_implement, workspace size) come before the copy; only an
// initialize / launch failure leaves the (harmless) array copy into the workspace enqueued.
template <class G>
bool run(const GemmGroup* groups, int count, bool accumulate, const CutlassLaunch& launch) {
  using Gemm = typename G::Gemm;
  if (count <= 0 || groups == nullptr || launch.sm_count <= 0 || launch.workspace == nullptr) return false;

  // Aligned workspace: arrays, then CUTLASS's part.
  const uintptr_t raw = reinterpret_cast<uintptr_t>(launch.workspace);
  const size_t skip = round_up(raw, kWorkspaceAlign) - raw;
  const ArrayLayout<G> at(count);
  unsigned char* const dev = static_cast<unsigned char*>(launch.workspace) + skip;
  if (skip + at.bytes > launch.workspace_bytes) return false;

  // Host copies of the arrays, in the device layout.
  std::vector<typename G::Shape> host_shapes(static_cast<size_t>(count));
  std::vector<unsigned char> host(at.bytes, 0);
  auto put = [&](size_t offset, int i, const auto& value) {
    std::memcpy(host.data() + offset + static_cast<size_t>(i) * sizeof(value), &value, sizeof(value));
  };
  for (int i = 0; i < count; ++i) {
    const GemmGroup& g = groups[i];
    host_shapes[i] = cute::make_shape(static_cast<int>(g.m), static_cast<int>(g.n), static_cast<int>(g.k));
    put(at.shapes, i, host_shapes[i]);
    put(at.ptr_a, i, static_cast<const Element*>(g.a));
    put(at.ptr_b, i, static_cast<const Element*>(g.b));
    put(at.ptr_d, i, static_cast<Element*>(g.d));
    put(at.stride_a, i, leading_stride<typename G::StrideA>(g.lda));
    put(at.stride_b, i, leading_stride<typename G::StrideB>(g.ldb));
    put(at.stride_d, i, leading_stride<typename G::StrideD>(g.ldd));
  }

  const auto args = grouped_arguments<G>(count, dev, host_shapes.data(), accumulate, launch.device, launch.sm_count);
  if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return false;
  void* const cutlass_workspace = dev + at.bytes;
  if (skip + at.bytes + Gemm::get_workspace_size(args) > launch.workspace_bytes) return false;

  // One copy; the pageable source is staged before cudaMemcpyAsync returns (see the top).
  if (cudaMemcpyAsync(dev, host.data(), at.bytes, cudaMemcpyHostToDevice, launch.stream) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return initialize_and_run<Gemm>(args, cutlass_workspace, launch.stream);
}

// Defines a kernel file's two functions (grouped_kernels.h), name_workspace_bytes and name, for
// the configuration given after the name.
#define EMBER_GROUPED_GEMM_KERNEL(name, ...)                                                                       \
  size_t name##_workspace_bytes(int count, int sm_count) { return workspace_bytes<__VA_ARGS__>(count, sm_count); } \
  bool name(const GemmGroup* groups, int count, bool accumulate, const CutlassLaunch& launch) {                    \
    return run<__VA_ARGS__>(groups, count, accumulate, launch);                                                    \
  }

}  // namespace ember::sparse::grouped_impl
