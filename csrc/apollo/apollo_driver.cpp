// The APOLLO step driver (see apollo_driver.h). Matrices go through in chunks of equal shape where they
// can (one launch per kernel per chunk); a chunk's transients (P, R, channel sums) are freed
// before the next chunk starts, so the step's extra memory is one chunk's worth of L×r.
//
// P is generated into a transient buffer and multiplied by a library GEMM, rather than produced
// tile by tile inside a fused GEMM: every CTA row of such a GEMM would regenerate all of P
// (L/128 times r·S normals, ~90M for a 7B MLP matrix), costing more than the GEMM reads, while
// the buffer is r·S values (4 MB for a 7B MLP matrix), generated once and read from L2.
#include "apollo_driver.h"

#include "scalar_type.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace ember::apollo {
namespace {

constexpr size_t kChunk = 16;

}  // namespace

void fill_projection(const at::Tensor& out, uint64_t seed, uint32_t stream, uint32_t refresh, const Kernels& kernels) {
  Projection p;
  p.out = out.data_ptr();
  p.type = scalar_type_of(out);
  p.rank = out.size(0);
  p.dim = out.size(1);
  p.seed = seed;
  p.stream = stream;
  p.refresh = refresh;
  kernels.projection(&p, 1, kernels.stream);
}

void step(const Hyper& h, at::TensorList params, at::TensorList grads, at::TensorList exp_avg,
          at::TensorList exp_avg_sq, at::TensorList norm_prev, at::IntArrayRef steps, at::IntArrayRef streams,
          const Kernels& kernels) {
  std::vector<size_t> order(params.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::make_pair(params[a].size(0), params[a].size(1)) < std::make_pair(params[b].size(0), params[b].size(1));
  });
  for (size_t c0 = 0; c0 < order.size(); c0 += kChunk) {
    const size_t n = std::min(kChunk, order.size() - c0);
    std::vector<Matrix> mats(n);
    std::vector<Projection> projs(n);
    std::vector<at::Tensor> proj(n), r(n), sums(n);
    for (size_t k = 0; k < n; ++k) {
      const size_t i = order[c0 + k];
      const at::Tensor& w = params[i];
      Matrix& m = mats[k];
      m.w = w.data_ptr();
      m.g = grads[i].data_ptr();
      m.type = scalar_type_of(w);
      m.rows = w.size(0);
      m.cols = w.size(1);
      m.exp_avg = exp_avg[i].data_ptr<float>();
      m.exp_avg_sq = exp_avg_sq[i].data_ptr<float>();
      m.norm_prev = norm_prev[i].data_ptr<float>();
      m.step = steps[i];
      m.stream = static_cast<uint32_t>(streams[i]);
      m.step_size = step_size(h, m.step);
      // The GEMM's input type: bf16 × bf16 → fp32 on CUDA; the CPU BLAS takes fp32.
      const bool bf16_gemm = w.is_cuda() && m.type == ScalarType::kBFloat16;
      proj[k] = at::empty({h.rank, m.short_dim()}, w.options().dtype(bf16_gemm ? at::kBFloat16 : at::kFloat));
      Projection& p = projs[k];
      p.out = proj[k].data_ptr();
      p.type = scalar_type_of(proj[k]);
      p.rank = h.rank;
      p.dim = m.short_dim();
      p.seed = h.seed;
      p.stream = m.stream;
      p.refresh = m.refresh(h.update_proj_gap);
      if (w.is_cuda()) r[k] = at::empty({m.long_dim(), h.rank}, w.options().dtype(at::kFloat));
      sums[k] = at::empty({3 * m.long_dim() + 1}, w.options().dtype(at::kFloat));
      m.r = w.is_cuda() ? r[k].data_ptr<float>() : nullptr;
      m.gsq = sums[k].data_ptr<float>();
      m.rt_sq = m.gsq + m.long_dim();
      m.r_sq = m.rt_sq + m.long_dim();
      m.coef = m.r_sq + m.long_dim();
    }
    kernels.projection(projs.data(), static_cast<int>(n), kernels.stream);
    if (params[0].is_cpu()) {
      // Matrix by matrix: the update then reads G (and W) while the projection's pass over G has
      // left it in the last-level cache.
      for (size_t k = 0; k < n; ++k) {
        project_moments_cpu(h, mats[k], grads[order[c0 + k]], proj[k]);
        kernels.finalize(h, &mats[k], 1, kernels.stream);
        kernels.update(h, &mats[k], 1, kernels.stream);
      }
      continue;
    }
    for (size_t k = 0; k < n; ++k) {  // R = Gv·Pᵀ by cuBLAS, fp32 out
      const at::Tensor& g = grads[order[c0 + k]];
      const at::Tensor gv = mats[k].transposed() ? g.t() : g;
      if (proj[k].scalar_type() == at::kBFloat16) {
        at::mm_out(r[k], gv, proj[k].t(), at::kFloat);
      } else {
        at::mm_out(r[k], gv, proj[k].t());
      }
    }
    kernels.channel_sumsq(mats.data(), static_cast<int>(n), kernels.stream);
    kernels.moments(h, mats.data(), static_cast<int>(n), kernels.stream);
    kernels.finalize(h, mats.data(), static_cast<int>(n), kernels.stream);
    kernels.update(h, mats.data(), static_cast<int>(n), kernels.stream);
  }
}

}  // namespace ember::apollo
