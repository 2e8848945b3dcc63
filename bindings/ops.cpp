// Every ember op schema, in one table. The CPU / CUDA kernels are registered next to their
// family's binding (bindings/<family>.cpp, bindings/<family>_cuda.cpp); fake (meta) kernels and
// autograd formulas are registered from Python (python/ember/ops/).
#include <torch/library.h>

TORCH_LIBRARY(ember, m) {
  // ---- float8 ----------------------------------------------------------------------------------
  // quantize_fp8: y = x (or xᵀ when transpose) -> (q, scale) with y ≈ q.float() * scale.
  //   dtype: float8_e4m3fn | float8_e5m2.  granularity: "tensor" | "row" | "block" | "tile"
  //   (block: 1×block runs along y's rows; tile: block×block tiles). x: 2-D fp32/fp16/bf16,
  //   contiguous ("tensor" without transpose takes any shape). q: y's shape; scale: fp32,
  //   () | (rows, 1) | (rows, ceil(cols/block)) | (ceil(rows/block), ceil(cols/block)).
  m.def("quantize_fp8(Tensor x, ScalarType dtype, str granularity, int block, bool transpose) -> (Tensor q, Tensor scale)");
}
