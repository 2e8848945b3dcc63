// Every ember op schema, in one table. The CPU / CUDA kernels are registered by their family's
// bindings/<family>_cpu.cpp and <family>_cuda.cpp (docs/adding_an_op.md); fake (meta) kernels and
// autograd formulas are registered from Python (python/ember/ops/), except for the ops marked not
// differentiable at the end of this file.
#include <torch/library.h>

TORCH_LIBRARY(ember, m) {
  // ---- float8 ----------------------------------------------------------------------------------
  // quantize_fp8: y = x (or xᵀ when transpose) -> (q, scale) with y ≈ q.float() * scale.
  //   dtype: float8_e4m3fn | float8_e5m2.  granularity: "tensor" | "row" | "block" | "tile"
  //   (block: 1×block runs along y's rows; tile: block×block tiles). x: 2-D fp32/fp16/bf16,
  //   contiguous ("tensor" without transpose takes any shape). q: y's shape; scale: fp32,
  //   () | (rows, 1) | (rows, ceil(cols/block)) | (ceil(rows/block), ceil(cols/block)).
  m.def(
      "quantize_fp8(Tensor x, ScalarType dtype, str granularity, int block, bool transpose) -> (Tensor q, Tensor "
      "scale)");
  // fp8_gemm: out = (a·a_scale)(b·b_scale)ᵀ + bias. a (M, K), b (N, K): fp8, row-major, K and N
  //   multiples of 16, not both e5m2. The scale shapes pick the recipe: () × () tensorwise,
  //   (M,1) × (N,1) rowwise, (M,⌈K/128⌉) × (⌈N/128⌉,⌈K/128⌉) blockwise, (M,⌈K/128⌉) × (N,⌈K/128⌉)
  //   blockwise weight gradient. out_dtype: bf16 | fp16 | fp32; bias (N) or None; fast_accum:
  //   tensorwise / rowwise on CUDA only (blockwise always promotes every 128 of K).
  m.def(
      "fp8_gemm(Tensor a, Tensor a_scale, Tensor b, Tensor b_scale, ScalarType out_dtype, Tensor? bias, bool "
      "fast_accum) -> Tensor");

  // ---- apollo ----------------------------------------------------------------------------------
  // apollo_step_: one APOLLO step (include/ember/apollo.h has the rule) for matrices i of one
  //   param group, in place: params[i] (2-D fp32/bf16, contiguous), grads[i] (same shape, dtype),
  //   exp_avg[i] / exp_avg_sq[i] (fp32, (max(m,n), rank)), norm_prev[i] (fp32, one element);
  //   steps[i] is the step being taken (from 1), streams[i] the parameter's index (keys its P).
  m.def(
      "apollo_step_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avg, Tensor(c!)[] exp_avg_sq, "
      "Tensor(d!)[] norm_prev, int[] steps, int[] streams, float lr, float beta1, float beta2, float eps, "
      "float weight_decay, float scale, bool tensor_scale, float norm_growth_limit, int rank, "
      "int update_proj_gap, int seed, bool stochastic_rounding) -> ()");
  // apollo_projection_: out (rank, dim) = the projection P of (seed, stream, refresh), N(0,1)/√rank
  //   from Philox4x32-10; the same bits on CPU and CUDA. out: fp32 (CUDA also bf16), contiguous.
  m.def("apollo_projection_(Tensor(a!) out, int seed, int stream, int refresh) -> ()");

  // ---- cross_entropy ---------------------------------------------------------------------------
  // Per token i (include/ember/cross_entropy.h): loss_i = w_i·[(1−ls)(lse−z_y) + ls(lse−mean z)
  //   + z_loss·lse²] after z ← c·tanh(z/c) when softcap c > 0 (0: off); 0 for ignored tokens.
  //   logits (N, V) fp32/bf16/fp16 with contiguous rows; target (N) int64; weight (N) fp32.
  // cross_entropy_forward -> per-token loss, lse, log p(target), entropy (fp32 (N); the last
  //   two empty unless asked for).
  m.def(
      "cross_entropy_forward(Tensor logits, Tensor target, Tensor? weight, int ignore_index, float label_smoothing, "
      "float z_loss, float softcap, bool return_logprobs, bool return_entropy) -> (Tensor, Tensor, Tensor, Tensor)");
  // cross_entropy_backward: ∂(Σ_i grad_loss_i·loss_i)/∂logits, in logits' dtype; the _ variant
  //   writes it into logits itself.
  m.def(
      "cross_entropy_backward(Tensor grad_loss, Tensor logits, Tensor target, Tensor? weight, Tensor lse, "
      "int ignore_index, float label_smoothing, float z_loss, float softcap) -> Tensor");
  m.def(
      "cross_entropy_backward_(Tensor(a!) logits, Tensor grad_loss, Tensor target, Tensor? weight, Tensor lse, "
      "int ignore_index, float label_smoothing, float z_loss, float softcap) -> ()");
  // linear_cross_entropy_forward: logits = hidden (N, d) · lm_weight (V, d)ᵀ + bias, never all
  //   at once (chunks of rows). -> loss, lse, logprobs, entropy as above, and when compute_grad
  //   the gradients of Σ_i loss_i: dhidden (N, d), dlm_weight (V, d), dbias (V) (else empty).
  m.def(
      "linear_cross_entropy_forward(Tensor hidden, Tensor lm_weight, Tensor target, Tensor? weight, Tensor? bias, "
      "int ignore_index, float label_smoothing, float z_loss, float softcap, bool compute_grad, bool return_logprobs, "
      "bool return_entropy) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // linear_cross_entropy_backward: the gradients of Σ_i grad_loss_i·loss_i, logits recomputed.
  m.def(
      "linear_cross_entropy_backward(Tensor grad_loss, Tensor hidden, Tensor lm_weight, Tensor target, Tensor? weight, "
      "Tensor? bias, Tensor lse, int ignore_index, float label_smoothing, float z_loss, float softcap) "
      "-> (Tensor, Tensor, Tensor)");

  // ---- sparse ----------------------------------------------------------------------------------
  // Mask formats (include/ember/sparse.h): block 0 = bitmask, int32 words (rows, ceil(cols/32));
  //   block 16/32/64/128 = one uint8 per tile (ceil(rows/b), ceil(cols/b)), 1 = kept.
  // pack_mask: mask (rows, cols) bool -> packed (a block mask must be constant on its tiles).
  m.def("pack_mask(Tensor mask, int block) -> Tensor");
  m.def("unpack_mask(Tensor packed, int rows, int cols, int block) -> Tensor");
  // masked_linear: y = x (N, in) · (W⊙M)ᵀ + bias, W (out, in); block masks skip empty tiles.
  m.def("masked_linear(Tensor x, Tensor weight, Tensor mask, int block, Tensor? bias) -> Tensor");
  // masked_linear_backward -> (dx = g·(W⊙M), dw = (gᵀ·x)⊙M), each empty unless asked for.
  m.def(
      "masked_linear_backward(Tensor grad, Tensor x, Tensor weight, Tensor mask, int block, bool need_x, bool need_w) "
      "-> (Tensor, Tensor)");
}

// Not differentiable: quantize_fp8's outputs never require grad, and Float8Linear's autograd
// function quantizes and calls fp8_gemm for each GEMM, deciding what flows back.
TORCH_LIBRARY_IMPL(ember, Autograd, m) {
  m.impl("quantize_fp8", torch::CppFunction::makeFallthrough());
  m.impl("fp8_gemm", torch::CppFunction::makeFallthrough());
}
