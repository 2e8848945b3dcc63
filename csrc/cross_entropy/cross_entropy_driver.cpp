// The cross-entropy driver (see cross_entropy_driver.h).
//
// linear_cross_entropy is chunked recompute over rows: a chunk of C rows of h makes a C×V
// logits chunk (the BLAS / cuBLAS GEMM), the row kernels turn it into losses, and two more GEMMs
// give the chunk's dh rows and its share of dW. The gradient g of the chunk is made one of two
// ways:
//   - materialized: the row kernels write it in the same visit of each row as the loss (in place
//     over the fp32 logits on the CPU; a 16-bit copy for the tensor cores on CUDA), then
//     dh = g·W and dW += gᵀ·h (BLAS / cuBLAS);
//   - fused (CUDA bf16 without bias by default; EMBER_CE_SOFTMAX_GEMM=1 / 0 forces it on / off,
//     on the CPU too): the row kernels compute only the losses and lse, and the softmax-gradient
//     GEMMs (include/ember/cross_entropy_softmax_grad.h) read the fp32 logits and turn each into
//     its gradient inside the GEMM (the same grad_logit, rounded to bf16 there as the
//     materialized path rounds it), so g never exists.
// Memory: one fp32 chunk (and, materialized on CUDA, its 16-bit gradient), never N×V. FLOPs:
// 6·N·d·V when the forward computes the gradients (the training path), 8·N·d·V when a backward
// with per-row upstream gradients has to recompute the logits.
#include "cross_entropy_driver.h"

#include "kernel_registry.h"
#include "scalar_type.h"
#include "strict_mode.h"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace ember::ce {
namespace {

RowsParams rows_params(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& weight, const Options& o) {
  RowsParams p;
  p.logits = logits.data_ptr();
  p.type = scalar_type_of(logits);
  p.rows = logits.size(0);
  p.vocab = logits.size(1);
  p.ld = logits.stride(0);
  p.target = target.data_ptr<int64_t>();
  p.weight = weight.defined() ? weight.data_ptr<float>() : nullptr;
  p.opt = o;
  return p;
}

at::Tensor or_undefined(const std::optional<at::Tensor>& t) { return t.has_value() ? *t : at::Tensor(); }

// Rows per chunk (a multiple of 8): the fp32 logits chunk stays under 8 MB on a CPU (torch's
// chunked op's time and memory; bench/NOTES.md has the chunk sizes measured) and 256 MB on a GPU,
// where it keeps the GEMMs at full rate (512 rows at V = 128k).
int64_t chunk_rows(int64_t vocab, bool cuda) {
  const int64_t budget = cuda ? (int64_t{256} << 20) : (int64_t{8} << 20);
  const int64_t rows = budget / (4 * std::max<int64_t>(vocab, 1)) / 8 * 8;
  return std::max<int64_t>(rows, 8);
}

// Whether the chunks' gradients go through the softmax-gradient GEMMs (see the top): by default
// on CUDA for bf16, never on the CPU; EMBER_CE_SOFTMAX_GEMM=1 / 0 turns them on / off on either
// (the tests, and the benchmark's side-by-side row). Never with a bias (its gradient needs G).
bool fused_backward(const Kernels& k, const at::Tensor& w, const at::Tensor& bias) {
  if (k.softmax_grad_gemm == nullptr || bias.defined()) return false;
  if (kernel_disabled("cross_entropy.softmax_grad_gemm")) return false;  // the materialized gradient instead
  const char* env = env_value("EMBER_CE_SOFTMAX_GEMM");
  if (env != nullptr) return std::string(env) == "1";
  return w.is_cuda() && w.scalar_type() == at::kBFloat16;
}

// The GEMM operands in the type the device multiplies: fp32 on the CPU, as given on CUDA.
at::Tensor compute_operand(const at::Tensor& t) { return t.is_cuda() || !t.defined() ? t : t.to(at::kFloat); }

// logits_chunk = h_c·Wᵀ (+ bias), fp32.
void chunk_logits(at::Tensor& out, const at::Tensor& h, const at::Tensor& w, const at::Tensor& bias) {
  if (h.scalar_type() != at::kFloat) {
    at::mm_out(out, h, w.t(), at::kFloat);
  } else {
    at::mm_out(out, h, w.t());
  }
  if (bias.defined()) out.add_(bias);
}

struct GradSink {
  at::Tensor dh, dw, db;  // dh: hidden's dtype; dw: fp32 on CPU, W's dtype on CUDA; db fp32
};

// Adds chunk c's gradient (grad: n×V, the operands' dtype) into the sink.
void accumulate(GradSink& s, const at::Tensor& grad, const at::Tensor& rows, const at::Tensor& h, const at::Tensor& w) {
  s.dh.index_copy_(0, rows, at::mm(grad, w).to(s.dh.scalar_type()));
  s.dw.addmm_(grad.t(), h);
  if (s.db.defined()) s.db.add_(grad.sum(0, false, at::kFloat));
}

// One chunk of kept rows: their indices, h rows, targets, token weights and the logits chunk.
struct Chunk {
  at::Tensor rows, h, target, weight, logits;
};

// The side tensor of the softmax-gradient GEMMs (include/ember/cross_entropy_softmax_grad.h) for chunk rows with these
// lse (float64), scales and targets: per row and vocabulary tile t of `block` columns, the words
// (lse.hi, scale, target − t·block, lse.lo), lse = hi + lo as split_lse makes them.
at::Tensor side_tensor(const at::Tensor& lse, const at::Tensor& scale, const at::Tensor& target, int64_t vocab,
                       int64_t block) {
  const int64_t groups = (vocab + block - 1) / block;
  const auto f32 = lse.options().dtype(at::kFloat);
  const at::Tensor hi = lse.to(at::kFloat);
  const at::Tensor lo = at::where(hi.isfinite(), (lse - hi.to(at::kDouble)).to(at::kFloat), at::zeros({}, f32));
  at::Tensor side = at::empty({lse.size(0), groups, 4}, lse.options().dtype(at::kInt));
  auto word = [&](int w, const at::Tensor& v) { side.select(2, w).copy_(v.unsqueeze(1).expand({-1, groups})); };
  word(0, hi.view(at::kInt));
  word(1, scale.contiguous().view(at::kInt));
  const at::Tensor starts = at::arange(groups, target.options()) * block;
  side.select(2, 2).copy_(target.unsqueeze(1) - starts.unsqueeze(0));
  word(3, lo.view(at::kInt));
  return side;
}

// Row scales upstream × token weight, 0 where the weight is 0 (row_scale of include/ember/cross_entropy.h).
at::Tensor row_scales(const at::Tensor& upstream, const at::Tensor& weight) {
  return weight.defined() ? at::where(weight == 0, at::zeros({}, upstream.options()), upstream * weight) : upstream;
}

// Adds chunk k's gradient into the sink with the softmax-gradient GEMMs, for row scales `scale`
// (upstream gradient × token weight) and the rows' lse. A GEMM the device refuses uses the
// materialized gradient instead (the row kernel).
void accumulate_fused(GradSink& s, const Chunk& k, const at::Tensor& lse, const at::Tensor& scale, const Options& o,
                      const at::Tensor& w, const Kernels& rk) {
  const int64_t c = k.rows.numel(), vocab = w.size(0), dim = w.size(1);
  SoftmaxGradGemmParams p;
  p.rows = c;
  p.vocab = vocab;
  p.dim = dim;
  p.type = scalar_type_of(w);
  p.logits = k.logits.data_ptr<float>();
  p.opt = o;
  at::Tensor g;  // the materialized gradient, made only if a GEMM is refused
  auto refused = [&](const char* which) -> const at::Tensor& {
    check_not_strict("EMBER_CE_STRICT", "ember.linear_cross_entropy", "the softmax-gradient GEMM refused ", which);
    if (!g.defined()) {
      g = at::empty({c, vocab}, w.options());
      backward(g, scale, k.logits, k.target, std::nullopt, lse, o, rk);
    }
    return g;
  };
  auto run = [&](SoftmaxGradKind kind, const at::Tensor& operand, const at::Tensor& result) {
    p.kind = kind;
    const at::Tensor side = side_tensor(lse, scale, k.target, vocab, side_block(kind));
    p.side = side.data_ptr();
    p.side_words = side.size(1) * 4;
    p.operand = operand.data_ptr();
    p.result = result.data_ptr();
    const at::Tensor workspace = at::empty({rk.softmax_grad_gemm_workspace_bytes(p)}, w.options().dtype(at::kByte));
    return rk.softmax_grad_gemm(p, workspace.data_ptr(), rk.stream);
  };
  at::Tensor dh =
      at::empty({c, dim}, lse.options().dtype(at::kFloat));  // fp32 (stream-K reduces in fp32), rounded once below
  if (!run(SoftmaxGradKind::kDhidden, w, dh)) dh = at::mm(refused("dh"), w);
  s.dh.index_copy_(0, k.rows, dh.to(s.dh.scalar_type()));
  if (!run(SoftmaxGradKind::kDweight, k.h, s.dw)) s.dw.addmm_(refused("dW").t(), k.h);
}

// Calls f(chunk) for consecutive chunks of `rows`, with the logits computed into logits_buf.
template <typename F>
void for_each_chunk(const at::Tensor& rows, int64_t chunk, const at::Tensor& h, const at::Tensor& w,
                    const at::Tensor& b, const at::Tensor& target, const at::Tensor& tw, at::Tensor& logits_buf,
                    F&& f) {
  for (int64_t c0 = 0; c0 < rows.numel(); c0 += chunk) {
    const int64_t c = std::min(chunk, rows.numel() - c0);
    Chunk k;
    k.rows = rows.slice(0, c0, c0 + c);
    k.h = h.index_select(0, k.rows);
    k.target = target.index_select(0, k.rows);
    k.weight = tw.defined() ? tw.index_select(0, k.rows) : at::Tensor();
    k.logits = logits_buf.slice(0, 0, c);
    chunk_logits(k.logits, k.h, w, b);
    f(k);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& logits, const at::Tensor& target,
                                                                   const std::optional<at::Tensor>& weight,
                                                                   const Options& o, bool logprobs, bool entropy,
                                                                   const Kernels& k, const at::Tensor& grad,
                                                                   const at::Tensor& grad_loss) {
  const auto f32 = logits.options().dtype(at::kFloat);
  const int64_t n = logits.size(0);
  at::Tensor loss = at::empty({n}, f32), lse = at::empty({n}, f32.dtype(at::kDouble));
  at::Tensor lp = at::empty({logprobs ? n : 0}, f32), ent = at::empty({entropy ? n : 0}, f32);
  RowsParams p = rows_params(logits, target, or_undefined(weight), o);
  p.loss = loss.data_ptr<float>();
  p.lse = lse.data_ptr<double>();
  p.logprob = logprobs ? lp.data_ptr<float>() : nullptr;
  p.entropy = entropy ? ent.data_ptr<float>() : nullptr;
  if (grad.defined()) {
    p.grad = grad.data_ptr();
    p.grad_ld = grad.stride(0);
    p.grad_type = scalar_type_of(grad);
    p.grad_rows = grad_loss.data_ptr<float>();
    p.grad_rows_stride = grad_loss.numel() == 1 ? 0 : grad_loss.stride(0);
  }
  k.forward(p, k.stream);
  return {loss, lse, lp, ent};
}

void backward(const at::Tensor& out, const at::Tensor& grad_loss, const at::Tensor& logits, const at::Tensor& target,
              const std::optional<at::Tensor>& weight, const at::Tensor& lse, const Options& o, const Kernels& k) {
  RowsParams p = rows_params(logits, target, or_undefined(weight), o);
  p.lse = const_cast<double*>(lse.data_ptr<double>());
  p.grad = out.data_ptr();
  p.grad_ld = out.stride(0);
  p.grad_type = scalar_type_of(out);
  p.grad_rows = grad_loss.data_ptr<float>();
  p.grad_rows_stride = grad_loss.dim() == 0 ? 0 : grad_loss.stride(0);
  k.backward(p, k.stream);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_forward(
    const at::Tensor& hidden, const at::Tensor& lm_weight, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, const Options& o, bool compute_grad,
    bool logprobs, bool entropy, const Kernels& rk) {
  const int64_t n = hidden.size(0), vocab = lm_weight.size(0);
  const bool cuda = hidden.is_cuda();
  const auto f32 = hidden.options().dtype(at::kFloat);
  at::Tensor loss = at::zeros({n}, f32), lse = at::zeros({n}, f32.dtype(at::kDouble));
  at::Tensor lp = at::zeros({logprobs ? n : 0}, f32), ent = at::zeros({entropy ? n : 0}, f32);
  const at::Tensor tw = or_undefined(weight);
  at::Tensor keep = target != o.ignore_index;
  if (tw.defined() && !logprobs && !entropy) keep = keep & (tw != 0);
  const at::Tensor rows = keep.nonzero().squeeze(1);  // (a host sync on CUDA: the chunk count)
  const at::Tensor h = compute_operand(hidden), b = compute_operand(or_undefined(bias));
  const at::Tensor w = compute_operand(lm_weight).contiguous();
  GradSink sink;
  if (compute_grad) {
    sink.dh = at::zeros_like(hidden);
    sink.dw = at::zeros({vocab, lm_weight.size(1)}, w.options());
    if (b.defined()) sink.db = at::zeros({vocab}, f32);
  }
  const bool fused = compute_grad && fused_backward(rk, w, b);
  const int64_t m = rows.numel(), chunk = std::min(chunk_rows(vocab, cuda), std::max<int64_t>(m, 1));
  at::Tensor logits_buf = at::empty({chunk, vocab}, f32);
  const bool separate_grad = w.scalar_type() != at::kFloat;  // CUDA bf16/fp16: the GEMMs take 16-bit
  at::Tensor grad_buf = compute_grad && !fused && separate_grad ? at::empty({chunk, vocab}, w.options()) : logits_buf;
  const at::Tensor unit = at::ones({1}, f32);  // ∂Σ loss_i: one upstream gradient of 1 for every row
  for_each_chunk(rows, chunk, h, w, b, target, tw, logits_buf, [&](const Chunk& k) {
    // losses and, when asked and not fused, the gradient (into grad_buf: in place in the fp32
    // logits on the CPU) in one visit of each row
    at::Tensor grad = compute_grad && !fused ? grad_buf.slice(0, 0, k.rows.numel()) : at::Tensor();
    auto [lc, sc, lpc, entc] = forward(k.logits, k.target, k.weight, o, logprobs, entropy, rk, grad, unit);
    loss.index_copy_(0, k.rows, lc);
    lse.index_copy_(0, k.rows, sc);
    if (logprobs) lp.index_copy_(0, k.rows, lpc);
    if (entropy) ent.index_copy_(0, k.rows, entc);
    if (fused) {
      accumulate_fused(sink, k, sc, k.weight.defined() ? k.weight : at::ones_like(sc, f32), o, w, rk);
    } else if (compute_grad) {
      accumulate(sink, grad, k.rows, k.h, w);
    }
  });
  if (compute_grad) {
    sink.dw = sink.dw.to(lm_weight.scalar_type());
    if (sink.db.defined()) sink.db = sink.db.to(bias->scalar_type());
  }
  auto empty = [&] { return at::empty({0}, f32); };
  return {loss,
          lse,
          lp,
          ent,
          compute_grad ? sink.dh : empty(),
          compute_grad ? sink.dw : empty(),
          sink.db.defined() ? sink.db : empty()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward(const at::Tensor& grad_loss, const at::Tensor& hidden,
                                                               const at::Tensor& lm_weight, const at::Tensor& target,
                                                               const std::optional<at::Tensor>& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               const at::Tensor& lse, const Options& o,
                                                               const Kernels& rk) {
  const int64_t vocab = lm_weight.size(0);
  const auto f32 = hidden.options().dtype(at::kFloat);
  const at::Tensor tw = or_undefined(weight);
  at::Tensor keep = (target != o.ignore_index) & (grad_loss != 0);
  if (tw.defined()) keep = keep & (tw != 0);
  const at::Tensor rows = keep.nonzero().squeeze(1);
  const at::Tensor h = compute_operand(hidden), b = compute_operand(or_undefined(bias));
  const at::Tensor w = compute_operand(lm_weight).contiguous();
  GradSink sink{at::zeros_like(hidden), at::zeros({vocab, lm_weight.size(1)}, w.options()),
                b.defined() ? at::zeros({vocab}, f32) : at::Tensor()};
  const bool fused = fused_backward(rk, w, b);
  const int64_t m = rows.numel(), chunk = std::min(chunk_rows(vocab, hidden.is_cuda()), std::max<int64_t>(m, 1));
  at::Tensor logits_buf = at::empty({chunk, vocab}, f32);
  at::Tensor grad_buf = !fused && w.scalar_type() != at::kFloat ? at::empty({chunk, vocab}, w.options()) : logits_buf;
  for_each_chunk(rows, chunk, h, w, b, target, tw, logits_buf, [&](const Chunk& k) {
    const at::Tensor gl = grad_loss.index_select(0, k.rows).to(at::kFloat), lse_c = lse.index_select(0, k.rows);
    if (fused) {
      accumulate_fused(sink, k, lse_c, row_scales(gl, k.weight), o, w, rk);
      return;
    }
    at::Tensor grad = grad_buf.slice(0, 0, k.rows.numel());
    backward(grad, gl, k.logits, k.target, k.weight, lse_c, o, rk);
    accumulate(sink, grad, k.rows, k.h, w);
  });
  return {sink.dh, sink.dw.to(lm_weight.scalar_type()),
          sink.db.defined() ? sink.db.to(bias->scalar_type()) : at::empty({0}, f32)};
}

}  // namespace ember::ce
