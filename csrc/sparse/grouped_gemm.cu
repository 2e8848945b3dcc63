// grouped_gemm_cuda / grouped_gemm_cuda_workspace_bytes (include/ember/sparse_grouped.h): checks a batch of
// groups against what the CUTLASS sm90a grouped kernels (grouped_{forward,dgrad,wgrad}.cu) can
// run and runs it with the kernel of its GroupedKind. No CUTLASS here, so this file compiles in
// seconds.
//
// What grouped_gemm_cuda checks before any kernel (a TMA descriptor the kernel cannot build is
// not reported; the grouped kernel rewrites its descriptors on the device, so a bad group would
// fault, never fail cleanly): the current device is compute capability 9.0 (the code is sm_90a
// only); 0 < count; for every group
//   - 0 < m, n, k ≤ INT_MAX (CUTLASS's int problem shape);
//   - a, b, d non-null and 16-byte aligned (TMA base addresses);
//   - lda, ldb, ldd multiples of 8 elements (16-byte TMA row strides), at least the contiguous
//     extent of their storage (rows do not overlap, D rows stay disjoint) and below 2^39 elements
//     (TMA strides are under 2^40 bytes);
//   - the contiguous extent of every operand's storage a multiple of 8 (CUTLASS's can_implement
//     requires it for TMA; the kernels check it again):
//       kForward: A m×k (k), B n×k (k), D m×n (n)  -> k % 8, n % 8
//       kDgrad:   A m×k (k), B k×n (n), D m×n (n)  -> k % 8, n % 8
//       kWgrad:   A k×m (m), B k×n (n), D m×n (n)  -> m % 8, n % 8
// It returns false otherwise (nothing launched), and the caller runs the groups itself. Not
// checked (the caller's contract): groups write disjoint D regions, and no A or B aliases a D.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cutlass_launch.h"
#include "ember/common.h"
#include "ember/sparse_grouped.h"
#include "grouped_kernels.h"

namespace ember::sparse {
namespace {

constexpr int64_t kAlign = 8;                 // bf16 elements per 16 bytes
constexpr int64_t kMaxLd = int64_t(1) << 39;  // elements: TMA strides < 2^40 bytes

// A leading dimension TMA accepts for rows of `extent` contiguous elements.
bool leading_dimension_ok(int64_t ld, int64_t extent) { return ld % kAlign == 0 && ld >= extent && ld < kMaxLd; }

bool group_ok(GroupedKind kind, const GemmGroup& g) {
  if (g.m <= 0 || g.n <= 0 || g.k <= 0 || g.m > INT_MAX || g.n > INT_MAX || g.k > INT_MAX) return false;
  if (!aligned16(g.a) || !aligned16(g.b) || !aligned16(g.d)) return false;
  int64_t a_extent = 0, b_extent = 0;  // contiguous extents of A's and B's storage
  switch (kind) {
    case GroupedKind::kForward:
      a_extent = g.k;
      b_extent = g.k;
      break;  // A m×k, B n×k
    case GroupedKind::kDgrad:
      a_extent = g.k;
      b_extent = g.n;
      break;  // A m×k, B k×n
    case GroupedKind::kWgrad:
      a_extent = g.m;
      b_extent = g.n;
      break;  // A k×m, B k×n
    default: return false;
  }
  const int64_t d_extent = g.n;  // D m×n
  if (a_extent % kAlign != 0 || b_extent % kAlign != 0 || d_extent % kAlign != 0) return false;
  return leading_dimension_ok(g.lda, a_extent) && leading_dimension_ok(g.ldb, b_extent) &&
         leading_dimension_ok(g.ldd, d_extent);
}

size_t kernel_workspace_bytes(GroupedKind kind, int count, int sm_count) {
  switch (kind) {
    case GroupedKind::kForward: return grouped_impl::grouped_forward_workspace_bytes(count, sm_count);
    case GroupedKind::kDgrad: return grouped_impl::grouped_dgrad_workspace_bytes(count, sm_count);
    case GroupedKind::kWgrad: return grouped_impl::grouped_wgrad_workspace_bytes(count, sm_count);
    default: return 0;
  }
}

bool kernel_run(GroupedKind kind, const GemmGroup* groups, int count, bool accumulate, const CutlassLaunch& launch) {
  switch (kind) {
    case GroupedKind::kForward: return grouped_impl::grouped_forward(groups, count, accumulate, launch);
    case GroupedKind::kDgrad: return grouped_impl::grouped_dgrad(groups, count, accumulate, launch);
    case GroupedKind::kWgrad: return grouped_impl::grouped_wgrad(groups, count, accumulate, launch);
    default: return false;
  }
}

}  // namespace

int64_t grouped_gemm_cuda_workspace_bytes(GroupedKind kind, int count) {
  if (count <= 0) return 0;
  const CutlassLaunch l = current_device_launch(nullptr);
  if (!l.sm90) return 0;
  return int64_t(kernel_workspace_bytes(kind, count, l.sm_count));
}

bool grouped_gemm_cuda(GroupedKind kind, const GemmGroup* groups, int count, bool accumulate, void* workspace,
                       void* stream) {
  if (count == 0) return true;  // nothing to do
  if (count < 0 || groups == nullptr) return false;
  if (kind != GroupedKind::kForward && kind != GroupedKind::kDgrad && kind != GroupedKind::kWgrad) return false;
  for (int i = 0; i < count; ++i) {
    if (!group_ok(kind, groups[i])) return false;
  }
  CutlassLaunch launch = current_device_launch(stream);
  if (!launch.sm90) return false;
  launch.workspace = workspace;
  launch.workspace_bytes = kernel_workspace_bytes(kind, count, launch.sm_count);  // the caller allocated this much
  if (launch.workspace_bytes == 0 || workspace == nullptr) return false;
  return kernel_run(kind, groups, count, accumulate, launch);
}

}  // namespace ember::sparse
