// float8 family, scaled GEMM: out = (a · a_scale) @ (b · b_scale)ᵀ (+ bias), with a: M×K and
// b: N×K row-major fp8 (the "TN" layout of the fp8 tensor cores). Torch-free.
//
// The recipe is the pair of scale layouts quantize_fp8 produces; every one is "one fp32 scale per
// group_rows × group_cols group of the operand", stored row-major with `ld` scales per row:
//   recipe          a scales           b scales              a groups   b groups
//   kTensorwise     ()                 ()                    M×K        N×K
//   kRowwise        (M,1)              (N,1)                 1×K        1×K
//   kBlockwise      (M,⌈K/128⌉)        (⌈N/128⌉,⌈K/128⌉)     1×128      128×128   forward, dgrad
//   kBlockwiseWgrad (M,⌈K/128⌉)        (N,⌈K/128⌉)           1×128      1×128     wgrad (K = tokens)
// The CPU path dequantizes with exactly this indexing (dequantized() below) and runs an fp32 GEMM;
// the CUDA kernels read the same scale arrays: tensorwise / rowwise scales in the epilogue, the
// blockwise ones in the mainloop, where partial sums are promoted to fp32 every 128 of K.
#pragma once

#include "ember/common.h"
#include "ember/fp8.h"

namespace ember::float8 {

constexpr int64_t kGemmBlock = 128;  // blockwise scale edge (DeepGEMM's 1×128 / 128×128)
constexpr int64_t kGemmAlign = 16;   // K and N must be multiples (TMA: 16-byte rows of fp8)

enum class GemmRecipe : int { kTensorwise = 0, kRowwise = 1, kBlockwise = 2, kBlockwiseWgrad = 3 };

// Where the scale of element (row, col) of an operand lives.
struct ScaleGroups {
  int64_t group_rows = 1;
  int64_t group_cols = 1;
  int64_t ld = 1;  // scales per row of the scale array
  EMBER_HOST_DEVICE int64_t index(int64_t row, int64_t col) const { return (row / group_rows) * ld + col / group_cols; }
};

// Scale layout of operand a (is_b = false) or b (is_b = true) of a rows × k operand.
EMBER_HOST_DEVICE ScaleGroups scale_groups(GemmRecipe r, bool is_b, int64_t rows, int64_t k) {
  const int64_t whole_rows = rows > 0 ? rows : 1, whole_k = k > 0 ? k : 1;
  switch (r) {
    case GemmRecipe::kTensorwise: return {whole_rows, whole_k, 1};
    case GemmRecipe::kRowwise: return {1, whole_k, 1};
    case GemmRecipe::kBlockwise: return {is_b ? kGemmBlock : 1, kGemmBlock, ceil_div(k, kGemmBlock)};
    default: return {1, kGemmBlock, ceil_div(k, kGemmBlock)};
  }
}

// The value an fp8 element stands for: q · scale (q is exact in fp32; the product is rounded once).
EMBER_HOST_DEVICE float dequantized(uint8_t q, fp8::Format f, const float* scale, const ScaleGroups& g, int64_t row,
                                    int64_t col) {
  return fp8::decode(q, f) * scale[g.index(row, col)];
}

// Output element types of the GEMM.
enum class OutType : int { kBFloat16 = 0, kFloat16 = 1, kFloat32 = 2 };

struct GemmParams {
  const uint8_t* a = nullptr;  // M × K fp8, row-major
  const uint8_t* b = nullptr;  // N × K fp8, row-major
  fp8::Format a_format = fp8::Format::kE4M3;
  fp8::Format b_format = fp8::Format::kE4M3;
  int64_t m = 0, n = 0, k = 0;
  GemmRecipe recipe = GemmRecipe::kTensorwise;
  const float* a_scale = nullptr;  // fp32, row-major (see scale_groups)
  const float* b_scale = nullptr;
  const float* bias = nullptr;  // N fp32 values, or null
  void* out = nullptr;          // M × N row-major, out_type
  OutType out_type = OutType::kBFloat16;
  bool fast_accum = true;  // tensorwise / rowwise only; blockwise always promotes

  ScaleGroups a_groups() const { return scale_groups(recipe, false, m, k); }
  ScaleGroups b_groups() const { return scale_groups(recipe, true, n, k); }
  bool blockwise() const { return recipe == GemmRecipe::kBlockwise || recipe == GemmRecipe::kBlockwiseWgrad; }
};

// Dequantize one operand (rows × cols fp8, row-major) into fp32 with its scales.
struct DequantizeParams {
  const uint8_t* q = nullptr;
  fp8::Format format = fp8::Format::kE4M3;
  int64_t rows = 0, cols = 0;
  const float* scale = nullptr;
  ScaleGroups groups;
  float* out = nullptr;  // rows × cols fp32, row-major
};

void dequantize_cpu(const DequantizeParams& p, void* stream = nullptr);  // stream: unused (same type as CUDA's)
void dequantize_cuda(const DequantizeParams& p, void* stream);

// CUTLASS sm90a kernels exist for these (a, b, out) combinations; the rest take the dequantize +
// fp32 GEMM path on the GPU too. e5m2 × e4m3 (the tensorwise backward) always promotes, whatever
// fast_accum says.
inline bool gemm_cuda_has_kernel(const GemmParams& p) {
  if (p.out_type != OutType::kBFloat16 || p.b_format != fp8::Format::kE4M3) return false;
  if (p.a_format == fp8::Format::kE4M3) return true;
  return !p.blockwise();  // e5m2 × e4m3: the tensorwise recipe's backward (dY in e5m2)
}
// Runs the CUTLASS kernel for p (gemm_cuda_has_kernel(p) must hold) on the current device.
// workspace: at least gemm_cuda_workspace_bytes(p) bytes of that device's memory. a, b and out
// must be 16-byte aligned (TMA). Returns false, launching nothing, if the kernel cannot run this
// problem (not sm_90, K == 0, a failed can_implement); the caller then falls back.
int64_t gemm_cuda_workspace_bytes(const GemmParams& p);
bool gemm_cuda(const GemmParams& p, void* workspace, void* stream);

}  // namespace ember::float8
