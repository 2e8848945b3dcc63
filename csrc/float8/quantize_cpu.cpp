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

template <typename T>
struct YView {  // y(r, c) without materializing xᵀ
  const T* x;
  int64_t ld;
  bool transpose;
  float operator()(int64_t r, int64_t c) const {
    return static_cast<float>(transpose ? x[c * ld + r] : x[r * ld + c]);
  }
};

template <typename T>
void quantize_tensorwise(const QuantizeParams& p, YView<T> y) {
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
template <typename T>
void quantize_banded(const QuantizeParams& p, YView<T> y) {
  const int64_t rows = p.y_rows(), cols = p.y_cols();
  const int64_t band = p.group_rows(), gc = p.group_cols(), ngc = p.scale_cols();
  at::parallel_for(0, p.scale_rows(), 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> amax(ngc), inv(ngc);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * band, r1 = std::min(rows, r0 + band);
      std::fill(amax.begin(), amax.end(), 0.0f);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < cols; ++c) amax[c / gc] = fp8::amax_combine(amax[c / gc], std::fabs(y(r, c)));
      for (int64_t g = 0; g < ngc; ++g) {
        p.scale[b * ngc + g] = fp8::scale_from_amax(amax[g], p.format);
        inv[g] = fp8::inv_scale_from_amax(amax[g], p.format);
      }
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = 0; c < cols; ++c) p.q[r * cols + c] = fp8::quantize(y(r, c), inv[c / gc], p.format);
    }
  });
}

template <typename T>
void quantize_typed(const QuantizeParams& p) {
  const YView<T> y{static_cast<const T*>(p.x), p.x_cols, p.transpose};
  if (p.granularity == Granularity::kTensor) {
    quantize_tensorwise(p, y);
  } else {
    quantize_banded(p, y);
  }
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
