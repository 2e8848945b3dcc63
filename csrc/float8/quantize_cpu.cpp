// CPU kernel of quantize_fp8: the math of include/ember/fp8.h over groups of y (= x or xᵀ).
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ember/float8.h"

namespace ember::float8 {
namespace {

template <typename T, bool kTranspose>
struct YView {  // y(r, c) without materializing xᵀ
  const T* x;
  int64_t ld;
  float operator()(int64_t r, int64_t c) const { return static_cast<float>(kTranspose ? x[c * ld + r] : x[r * ld + c]); }
};

template <typename Y>
void quantize_tensorwise(const QuantizeParams& p, Y y) {
  const int64_t rows = p.y_rows(), cols = p.y_cols();
  const float amax = at::parallel_reduce(
      0, rows, 16, 0.0f,
      [&](int64_t r0, int64_t r1, float m) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = 0; c < cols; ++c) m = fp8::amax_combine(m, std::fabs(y(r, c)));
        return m;
      },
      fp8::amax_combine);
  p.scale[0] = fp8::scale_from_amax(amax, p.format);
  const float inv = fp8::inv_scale_from_amax(amax, p.format);
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) p.q[r * cols + c] = fp8::quantize(y(r, c), inv, p.format);
  });
}

// Row, block and tile: a band of group_rows() rows of y holds whole groups, so bands are
// independent: amax per group, scales, then the cast.
template <typename Y>
void quantize_banded(const QuantizeParams& p, Y y) {
  const int64_t rows = p.y_rows(), cols = p.y_cols();
  const int64_t band = p.group_rows(), gc = std::max<int64_t>(p.group_cols(), 1), ngc = p.scale_cols();
  at::parallel_for(0, p.scale_rows(), 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> inv(ngc);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * band, r1 = std::min(rows, r0 + band);
      for (int64_t g = 0; g < ngc; ++g) {
        const int64_t c0 = g * gc, c1 = std::min(cols, c0 + gc);
        float amax = 0.0f;
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < c1; ++c) amax = fp8::amax_combine(amax, std::fabs(y(r, c)));
        p.scale[b * ngc + g] = fp8::scale_from_amax(amax, p.format);
        inv[g] = fp8::inv_scale_from_amax(amax, p.format);
      }
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t g = 0; g < ngc; ++g)
          for (int64_t c = g * gc, c1 = std::min(cols, c + gc); c < c1; ++c)
            p.q[r * cols + c] = fp8::quantize(y(r, c), inv[g], p.format);
    }
  });
}

template <typename T, bool kTranspose>
void quantize_view(const QuantizeParams& p) {
  const YView<T, kTranspose> y{static_cast<const T*>(p.x), p.x_cols};
  if (p.granularity == Granularity::kTensor) {
    quantize_tensorwise(p, y);
  } else {
    quantize_banded(p, y);
  }
}

template <typename T>
void quantize_typed(const QuantizeParams& p) {
  p.transpose ? quantize_view<T, true>(p) : quantize_view<T, false>(p);
}

}  // namespace

void quantize_cpu(const QuantizeParams& p) {
  switch (p.x_type) {
    case ScalarType::kFloat32: return quantize_typed<float>(p);
    case ScalarType::kFloat16: return quantize_typed<c10::Half>(p);
    case ScalarType::kBFloat16: return quantize_typed<c10::BFloat16>(p);
  }
}

}  // namespace ember::float8
