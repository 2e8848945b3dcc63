// gemm_cuda / gemm_cuda_workspace_bytes (include/ember/float8_gemm.h): picks one of the CUTLASS
// sm90a kernels of gemm_*.cu by recipe, a's format, fast_accum and shape, and runs it. No CUTLASS
// here, so this file compiles in seconds.
//
// Kernels (gemm_kernels.h):
//   tensorwise / rowwise, a e5m2            -> e5m2 promoted (128×128 cooperative), any fast_accum
//   tensorwise / rowwise, e4m3, !fast_accum -> e4m3 promoted (128×128 cooperative)
//   tensorwise / rowwise, e4m3, fast_accum  -> fast small (64×128 pingpong) when M ≤ 64 or the
//                                              64-row tiling fits in one wave of CTAs, else fast
//                                              large (128×128 pingpong, cluster 1×2)
//   blockwise                               -> blockwise (1×128 × 128×128)
//   blockwise wgrad                         -> blockwise wgrad (1×128 × 1×128)
// Tensorwise runs the rowwise kernels: their epilogue broadcasts a_scale / b_scale with a
// run-time stride (0 for tensorwise, reading the one scalar; 1 for rowwise vectors), so there is
// no scalar expansion, no extra launch and no workspace for it.
//
// What gemm_cuda checks before any kernel (CUTLASS's can_implement checks only shapes and
// strides; a TMA descriptor it cannot build is merely printed, not reported): the device is
// compute capability 9.0 (the code is sm_90a only); 0 < K, K % 16 == 0 and N % 16 == 0 (16-byte
// TMA rows); M, N, K fit CUTLASS's int problem shape; a, b and out are 16-byte aligned (TMA base
// addresses); every pointer the recipe reads is non-null. It returns false otherwise, and the
// caller falls back. M == 0 or N == 0 is an empty output: true, nothing launched.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cutlass_launch.h"
#include "ember/float8_gemm.h"
#include "gemm_kernels.h"
#include "kernel_registry.h"

namespace ember::float8 {
namespace {

enum class Kernel { kNone, kFastLarge, kFastSmall, kE4m3Promoted, kE5m2Promoted, kBlockwise, kBlockwiseWgrad };

// The kernels' requirements beyond gemm_cuda_has_kernel (see the top of the file); M, N > 0.
bool runnable(const GemmParams& p) {
  if (p.m <= 0 || p.n <= 0 || p.k <= 0) return false;
  if (p.m > INT_MAX || p.n > INT_MAX || p.k > INT_MAX) return false;
  if (p.k % kGemmAlign != 0 || p.n % kGemmAlign != 0) return false;
  if (p.a == nullptr || p.b == nullptr || p.out == nullptr || p.a_scale == nullptr || p.b_scale == nullptr)
    return false;
  return aligned16(p.a) && aligned16(p.b) && aligned16(p.out);
}

Kernel choose(const GemmParams& p, int sm_count) {
  switch (p.recipe) {
    case GemmRecipe::kBlockwise: return Kernel::kBlockwise;
    case GemmRecipe::kBlockwiseWgrad: return Kernel::kBlockwiseWgrad;
    case GemmRecipe::kTensorwise:
    case GemmRecipe::kRowwise: break;
    default: return Kernel::kNone;
  }
  if (p.a_format == fp8::Format::kE5M2) return Kernel::kE5m2Promoted;
  if (!p.fast_accum) return Kernel::kE4m3Promoted;
  // 64-row tiles waste no MMA rows for M ≤ 64 and give twice the CTAs of 128-row tiles; past one
  // wave the 128×128 tiles' higher arithmetic intensity wins (PyTorch's rowwise heuristic).
  const int64_t small_tiles = ceil_div(p.m, 64) * ceil_div(p.n, 128);
  return p.m <= 64 || small_tiles <= sm_count ? Kernel::kFastSmall : Kernel::kFastLarge;
}

// The kernel's name in the selftest and the registry of disabled kernels (kernel_registry.h).
const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::kFastLarge: return "float8.gemm.cutlass_fast_large";
    case Kernel::kFastSmall: return "float8.gemm.cutlass_fast_small";
    case Kernel::kE4m3Promoted: return "float8.gemm.cutlass_e4m3_promoted";
    case Kernel::kE5m2Promoted: return "float8.gemm.cutlass_e5m2_promoted";
    case Kernel::kBlockwise: return "float8.gemm.cutlass_blockwise";
    case Kernel::kBlockwiseWgrad: return "float8.gemm.cutlass_blockwise_wgrad";
    default: return "";
  }
}

size_t kernel_workspace_bytes(Kernel k, const GemmParams& p, int sm_count) {
  switch (k) {
    case Kernel::kFastLarge: return gemm_impl::gemm_scaled_e4m3_fast_large_workspace_bytes(p, sm_count);
    case Kernel::kFastSmall: return gemm_impl::gemm_scaled_e4m3_fast_small_workspace_bytes(p, sm_count);
    case Kernel::kE4m3Promoted: return gemm_impl::gemm_scaled_e4m3_promoted_workspace_bytes(p, sm_count);
    case Kernel::kE5m2Promoted: return gemm_impl::gemm_scaled_e5m2_promoted_workspace_bytes(p, sm_count);
    case Kernel::kBlockwise: return gemm_impl::gemm_blockwise_workspace_bytes(p, sm_count);
    case Kernel::kBlockwiseWgrad: return gemm_impl::gemm_blockwise_wgrad_workspace_bytes(p, sm_count);
    default: return 0;
  }
}

bool kernel_run(Kernel k, const GemmParams& p, const CutlassLaunch& launch) {
  switch (k) {
    case Kernel::kFastLarge: return gemm_impl::gemm_scaled_e4m3_fast_large(p, launch);
    case Kernel::kFastSmall: return gemm_impl::gemm_scaled_e4m3_fast_small(p, launch);
    case Kernel::kE4m3Promoted: return gemm_impl::gemm_scaled_e4m3_promoted(p, launch);
    case Kernel::kE5m2Promoted: return gemm_impl::gemm_scaled_e5m2_promoted(p, launch);
    case Kernel::kBlockwise: return gemm_impl::gemm_blockwise(p, launch);
    case Kernel::kBlockwiseWgrad: return gemm_impl::gemm_blockwise_wgrad(p, launch);
    default: return false;
  }
}

}  // namespace

int64_t gemm_cuda_workspace_bytes(const GemmParams& p) {
  if (!gemm_cuda_has_kernel(p) || !runnable(p)) return 0;
  const CutlassLaunch l = current_device_launch(nullptr);
  if (!l.sm90) return 0;
  return int64_t(kernel_workspace_bytes(choose(p, l.sm_count), p, l.sm_count));
}

bool gemm_cuda(const GemmParams& p, void* workspace, void* stream) {
  if (!gemm_cuda_has_kernel(p)) return false;
  if (p.m == 0 || p.n == 0) return p.m >= 0 && p.n >= 0 && p.k >= 0;  // empty output
  if (!runnable(p)) return false;
  CutlassLaunch launch = current_device_launch(stream);
  if (!launch.sm90) return false;
  const Kernel k = choose(p, launch.sm_count);
  if (k == Kernel::kNone || kernel_disabled(kernel_name(k))) return false;  // the caller emulates
  launch.workspace = workspace;
  launch.workspace_bytes = kernel_workspace_bytes(k, p, launch.sm_count);  // the caller allocated this much
  if (launch.workspace_bytes > 0 && workspace == nullptr) return false;
  return kernel_run(k, p, launch);
}

}  // namespace ember::float8
