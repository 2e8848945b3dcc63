// CPU kernel of quantize_fp8: the math of include/ember/fp8.h over groups of y (= x or xᵀ).
//
// y is processed in bands of whole groups: a band's rows are first gathered as fp32 rows (this
// is where xᵀ is read, a few x columns at a time), then amax and the cast run over contiguous
// fp32 spans. Those two loops are branch-free and vectorize (compiled with -fno-trapping-math,
// see CMakeLists.txt); on x86-64 they also get an AVX2 clone picked at load time.
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <vector>

#include "cpu_clones.h"
#include "ember/float8.h"

namespace ember::float8 {
namespace {

constexpr int64_t kBandRows = 16;  // rows of y per band for row / block / tensor

EMBER_CPU_CLONES float span_amax(const float* v, int64_t n, float m) {
  uint32_t bits = fp8::abs_bits(m);
  for (int64_t i = 0; i < n; ++i) bits = std::max(bits, fp8::abs_bits(v[i]));
  return bits_as_float(bits);
}

EMBER_CPU_CLONES void span_quantize(const float* v, uint8_t* q, int64_t n, float inv, fp8::Format f) {
  if (f == fp8::Format::kE4M3) {  // the format as a constant lets the loop fold it away
    for (int64_t i = 0; i < n; ++i) q[i] = fp8::quantize(v[i], inv, fp8::Format::kE4M3);
  } else {
    for (int64_t i = 0; i < n; ++i) q[i] = fp8::quantize(v[i], inv, fp8::Format::kE5M2);
  }
}

// Rows [r0, r1) of y as fp32, row-major with `cols` per row.
template <typename T>
void gather_rows(const QuantizeParams& p, int64_t r0, int64_t r1, float* out) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t cols = p.y_cols(), n = r1 - r0;
  if (!p.transpose) {
    for (int64_t i = 0; i < n * cols; ++i) out[i] = static_cast<float>(x[r0 * cols + i]);
  } else {  // y rows r0.. are x columns r0..: transpose in kTile-column strips, so the x cache
            // lines in use (one per strip row) and the pages touched stay few
    constexpr int64_t kTile = 32;
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = c0; c < c1; ++c) out[r * cols + c] = static_cast<float>(x[c * p.x_cols + r0 + r]);
    }
  }
}

template <typename T>
void quantize_tensorwise(const QuantizeParams& p) {
  const int64_t rows = p.y_rows(), cols = p.y_cols();
  const int64_t bands = ceil_div(rows, kBandRows);
  const auto band_rows = [&](int64_t b) { return std::min(rows, (b + 1) * kBandRows) - b * kBandRows; };
  const float amax = at::parallel_reduce(
      0, bands, 1, 0.0f,
      [&](int64_t b0, int64_t b1, float m) {
        std::vector<float> buf(kBandRows * cols);
        for (int64_t b = b0; b < b1; ++b) {
          gather_rows<T>(p, b * kBandRows, b * kBandRows + band_rows(b), buf.data());
          m = span_amax(buf.data(), band_rows(b) * cols, m);
        }
        return m;
      },
      fp8::amax_combine);
  p.scale[0] = fp8::scale_from_amax(amax, p.format);
  const float inv = fp8::inv_scale_from_amax(amax, p.format);
  at::parallel_for(0, bands, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> buf(kBandRows * cols);
    for (int64_t b = b0; b < b1; ++b) {
      gather_rows<T>(p, b * kBandRows, b * kBandRows + band_rows(b), buf.data());
      span_quantize(buf.data(), p.q + b * kBandRows * cols, band_rows(b) * cols, inv, p.format);
    }
  });
}

// Row, block and tile: a band holds whole groups (group_rows() divides its height), so bands
// are independent: amax per group, scales, then the cast.
template <typename T>
void quantize_banded(const QuantizeParams& p) {
  const int64_t rows = p.y_rows(), cols = p.y_cols();
  const int64_t gr = p.group_rows(), gc = std::max<int64_t>(p.group_cols(), 1), ngc = p.scale_cols();
  const int64_t band = gr == 1 ? kBandRows : gr;
  at::parallel_for(0, ceil_div(rows, band), 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> buf(band * cols), amax(ngc), inv(ngc);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * band, r1 = std::min(rows, r0 + band);
      gather_rows<T>(p, r0, r1, buf.data());
      for (int64_t g0 = r0; g0 < r1; g0 += gr) {  // each group row inside the band
        const int64_t g1 = std::min(r1, g0 + gr);
        std::fill(amax.begin(), amax.end(), 0.0f);
        for (int64_t r = g0; r < g1; ++r)
          for (int64_t g = 0; g < ngc; ++g) {
            const int64_t c0 = g * gc;
            amax[g] = span_amax(&buf[(r - r0) * cols + c0], std::min(cols, c0 + gc) - c0, amax[g]);
          }
        for (int64_t g = 0; g < ngc; ++g) {
          p.scale[(g0 / gr) * ngc + g] = fp8::scale_from_amax(amax[g], p.format);
          inv[g] = fp8::inv_scale_from_amax(amax[g], p.format);
        }
        for (int64_t r = g0; r < g1; ++r)
          for (int64_t g = 0; g < ngc; ++g) {
            const int64_t c0 = g * gc;
            span_quantize(&buf[(r - r0) * cols + c0], p.q + r * cols + c0, std::min(cols, c0 + gc) - c0, inv[g],
                          p.format);
          }
      }
    }
  });
}

template <typename T>
void quantize_typed(const QuantizeParams& p) {
  if (p.granularity == Granularity::kTensor) {
    quantize_tensorwise<T>(p);
  } else {
    quantize_banded<T>(p);
  }
}

}  // namespace

void quantize_cpu(const QuantizeParams& p, void*) {
  dispatch_float<float, c10::Half, c10::BFloat16>(p.x_type,
                                                  [&](auto t) { quantize_typed<typename decltype(t)::type>(p); });
}

}  // namespace ember::float8
