// bitmask_gemm_cuda (include/ember/sparse_bitmask_gemm.h): checks a bitmask GEMM against what the CUTLASS sm90a kernels
// (bitmask_gemm_{forward,dgrad,wgrad}.cu) can run and runs it. No CUTLASS here, so this file
// compiles in seconds.
//
// What is checked before any kernel (a TMA descriptor the kernel cannot build is not reported):
// bf16; the current device is compute capability 9.0 (the code is sm_90a only); 0 < tokens, out,
// in ≤ INT_MAX (CUTLASS's int problem shape); in % 128 == 0 (the mask's rows are then a multiple
// of 16 bytes, as TMA and the 128-bit mask loads of the dW epilogue need; W's and x's rows are 16-
// byte multiples too); out % 8 == 0 (16-byte rows of grad and of the column-major y); the kind's
// operands non-null and 16-byte aligned (bias: any bf16 address, it is read element by element).
// Otherwise it returns false, nothing launched, and the caller takes the tiled path.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "cutlass_launch.h"
#include "ember/common.h"
#include "ember/sparse_bitmask_gemm.h"
#include "bitmask_gemm_kernels.h"

namespace ember::sparse {
namespace {

bool operands_ok(const BitmaskGemmParams& p) {
  if (!aligned16(p.result) || !aligned16(p.words)) return false;
  switch (p.kind) {
    case BitmaskGemmKind::kForward: return aligned16(p.x) && aligned16(p.weight);
    case BitmaskGemmKind::kDgrad: return aligned16(p.grad) && aligned16(p.weight);
    case BitmaskGemmKind::kWgrad: return aligned16(p.grad) && aligned16(p.x);
    default: return false;
  }
}

}  // namespace

bool bitmask_gemm_cuda(const BitmaskGemmParams& p, bool bf16, void* stream) {
  if (!bf16) return false;
  if (p.tokens <= 0 || p.out <= 0 || p.in <= 0 || p.tokens > INT_MAX || p.out > INT_MAX || p.in > INT_MAX) return false;
  if (p.in % 128 != 0 || p.out % 8 != 0) return false;
  if (!operands_ok(p)) return false;
  const CutlassLaunch launch = current_device_launch(stream);
  if (!launch.sm90) return false;
  switch (p.kind) {
    case BitmaskGemmKind::kForward: return bitmask_impl::bitmask_forward(p, launch);
    case BitmaskGemmKind::kDgrad: return bitmask_impl::bitmask_dgrad(p, launch);
    case BitmaskGemmKind::kWgrad: return bitmask_impl::bitmask_wgrad(p, launch);
    default: return false;
  }
}

}  // namespace ember::sparse
