// The arithmetic that defines fp8 quantization, shared by the CPU and CUDA kernels:
// group amax -> scale, and float -> fp8 (e4m3fn / e5m2) with round-to-nearest-even and
// saturation. Torch-free; every function is host/device.
//
// For a group of values (a tensor, a row, a 1×block run or a block×block tile):
//   amax  = max |x|                      (NaN propagates)
//   scale = amax / fp8_max               (1 when amax == 0, so an all-zero group is exact;
//                                         amax is taken as at least FLT_MIN · fp8_max)
//   q     = fp8(clamp(x * (fp8_max / amax), -fp8_max, fp8_max))
// so x ≈ q · scale. ±inf is not saturated away: a group holding inf gets scale = inf (q is NaN
// where x is ±inf), a group holding NaN gets scale = NaN and NaN q; the overflow stays visible.
#pragma once

#include "ember/common.h"

namespace ember::fp8 {

enum class Format : int { kE4M3 = 0, kE5M2 = 1 };

EMBER_HOST_DEVICE constexpr float max_value(Format f) { return f == Format::kE4M3 ? 448.0f : 57344.0f; }
EMBER_HOST_DEVICE constexpr int mantissa_bits(Format f) { return f == Format::kE4M3 ? 3 : 2; }
EMBER_HOST_DEVICE constexpr int exponent_bias(Format f) { return f == Format::kE4M3 ? 7 : 15; }
// The one NaN code q holds (sign clear): 0.1111.111 in e4m3fn (which has no inf), 0.11111.11
// in e5m2. The sign of a NaN depends on the hardware's arithmetic, so it is not kept.
EMBER_HOST_DEVICE constexpr uint8_t nan_code(Format f) { return 0x7f; }

// 2^k for -126 <= k <= 127, built from its bits (exact, no libm).
// Round to the nearest integer, ties to even, for 0 <= x < 2^22: adding 2^23 leaves no fraction
// bits, so the fp32 add itself rounds (IEEE round-to-nearest-even, identical on host and device;
// an FMA contraction of the caller's exact power-of-two product changes nothing).
EMBER_HOST_DEVICE float round_half_even(float x) {
  constexpr float kShift = 8388608.0f;  // 2^23
  return (x + kShift) - kShift;
}

EMBER_HOST_DEVICE float pow2(int k) { return bits_as_float(uint32_t(k + 127) << 23); }

// |x| as bits: for non-negative floats the integer order is the value order, and every NaN ranks
// above inf, so an unsigned max over these bits is a NaN-propagating amax that vectorizes (CPU)
// and maps onto atomicMax (CUDA).
EMBER_HOST_DEVICE uint32_t abs_bits(float x) { return float_as_bits(x) & 0x7fffffffu; }

// NaN-propagating max, used for every amax reduction (the order of a reduction cannot change
// whether a NaN survives).
EMBER_HOST_DEVICE float amax_combine(float a, float b) { return (a > b || a != a) ? a : b; }

// The smallest amax a scale is taken from (FLT_MIN · fp8_max, exact): below it fp8_max / amax
// would overflow to inf and 0 · inf = NaN, so a tinier group is scaled as if its amax were this.
EMBER_HOST_DEVICE constexpr float min_amax(Format f) { return max_value(f) * 1.17549435e-38f; }
EMBER_HOST_DEVICE float clamp_amax(float amax, Format f) { return amax < min_amax(f) ? min_amax(f) : amax; }
// One NaN for every NaN scale, whatever payload the hardware's arithmetic would have made.
EMBER_HOST_DEVICE float canonical_nan() { return bits_as_float(0x7fc00000u); }

EMBER_HOST_DEVICE float scale_from_amax(float amax, Format f) {
  if (amax != amax) return canonical_nan();
  return amax == 0.0f ? 1.0f : clamp_amax(amax, f) / max_value(f);
}
EMBER_HOST_DEVICE float inv_scale_from_amax(float amax, Format f) {
  return amax == 0.0f ? 1.0f : max_value(f) / clamp_amax(amax, f);
}

// float -> fp8 bits: round to nearest even; finite values beyond the range (and ±inf)
// saturate to ±max; NaN -> nan_code. Same result as torch's clamp(-max, max) then
// .to(float8_*), up to the sign of NaN.
// Branch-free (it vectorizes on the CPU): with e the binade of |x| (at least emin, where the
// subnormals live) and k = |x| / 2^(e - man) rounded, the code is (e - emin) · 2^man + k for
// normals, subnormals and a round-up into the next binade alike.
EMBER_HOST_DEVICE uint8_t encode(float x, Format f) {
  const uint32_t bits = float_as_bits(x);
  const uint32_t sign = (bits >> 24) & 0x80u;
  const uint32_t mag = bits & 0x7fffffffu;
  const int man = mantissa_bits(f);
  const int emin = 1 - exponent_bias(f);  // binade of the smallest normal
  const float a0 = bits_as_float(mag);
  const float a = a0 < max_value(f) ? a0 : max_value(f);  // NaN lands here too; replaced below
  int e = int(float_as_bits(a) >> 23) - 127;
  e = e < emin ? emin : e;
  const uint32_t k = uint32_t(round_half_even(a * pow2(man - e)));  // exact scaling, then rounding
  const uint32_t code = (uint32_t(e - emin) << man) + k;
  return mag > 0x7f800000u ? nan_code(f) : uint8_t(sign | code);
}

// fp8 bits -> float, exact (every fp8 value is an fp32 value). e4m3fn has no inf (0x7f / 0xff
// are NaN); e5m2 has ±inf and NaNs at exponent 31. Normals and subnormals alike are
// significand · 2^(max(e, 1) - bias - man), the significand carrying the implicit 1 when e > 0.
EMBER_HOST_DEVICE float decode(uint8_t code, Format f) {
  const int man = mantissa_bits(f);
  const uint32_t mag = code & 0x7fu;
  const uint32_t e = mag >> man, m = mag & ((1u << man) - 1u);
  const float significand = float(e ? (1u << man) + m : m);
  float v = significand * pow2(int(e ? e : 1) - exponent_bias(f) - man);
  if (f == Format::kE4M3 && mag == 0x7fu) v = canonical_nan();
  if (f == Format::kE5M2 && e == 31u) v = m ? canonical_nan() : bits_as_float(0x7f800000u);
  return bits_as_float(float_as_bits(v) | (uint32_t(code & 0x80u) << 24));
}

EMBER_HOST_DEVICE uint8_t quantize(float x, float inv_scale, Format f) { return encode(x * inv_scale, f); }

}  // namespace ember::fp8
