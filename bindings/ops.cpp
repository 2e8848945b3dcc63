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

  // ---- apollo ----------------------------------------------------------------------------------
  // apollo_step_: one APOLLO step (include/ember/apollo.h has the rule) for matrices i of one
  //   param group, in place: params[i] (2-D fp32/bf16, contiguous), grads[i] (same shape, dtype),
  //   exp_avg[i] / exp_avg_sq[i] (fp32, (max(m,n), rank)), norm_prev[i] (fp32, one element);
  //   steps[i] is the step being taken (from 1), streams[i] the parameter's index (keys its P).
  m.def("apollo_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avg, Tensor(c!)[] exp_avg_sq, "
        "Tensor(d!)[] norm_prev, int[] steps, int[] streams, float lr, float beta1, float beta2, float eps, "
        "float weight_decay, float scale, bool tensor_scale, float norm_growth_limit, int rank, "
        "int update_proj_gap, int seed, bool stochastic_rounding) -> ()");
  // apollo_projection_: out (rank, dim) = the projection P of (seed, stream, refresh), N(0,1)/√rank
  //   from Philox4x32-10; the same bits on CPU and CUDA. out: fp32 (CUDA also bf16), contiguous.
  m.def("apollo_projection_(Tensor(a!) out, int seed, int stream, int refresh) -> ()");
}
