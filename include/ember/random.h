// Counter-based random numbers that come out bit-identical on the CPU and the GPU: Philox4x32-10
// and a Box-Muller normal built only from correctly rounded IEEE operations (+ − × ÷ √), so no
// libm or CUDA math-library difference can change a bit. Torch-free.
//
// Bit-identity needs every rounding to happen in the same place: the device side uses the
// explicit _rn intrinsics (nvcc never contracts them into FMAs) and host files that include this
// header are compiled with -ffp-contract=off (see CMakeLists.txt).
#pragma once

#include <cstdint>

#include "ember/common.h"

namespace ember::random {

// ---- exactly rounded float operations --------------------------------------------------------
EMBER_HOST_DEVICE float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
EMBER_HOST_DEVICE float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
EMBER_HOST_DEVICE float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
EMBER_HOST_DEVICE float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
EMBER_HOST_DEVICE float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}

// ---- Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3") ---------------
struct U32x4 {
  uint32_t x, y, z, w;
};

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

// One round on counter (x, y, z, w) with round key (k0, k1).
EMBER_HOST_DEVICE void philox_round(uint32_t& x, uint32_t& y, uint32_t& z, uint32_t& w, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * x, p1 = static_cast<uint64_t>(kPhiloxM1) * z;
  const uint32_t nx = static_cast<uint32_t>(p1 >> 32) ^ y ^ k0, nz = static_cast<uint32_t>(p0 >> 32) ^ w ^ k1;
  y = static_cast<uint32_t>(p1);
  w = static_cast<uint32_t>(p0);
  x = nx;
  z = nz;
}

EMBER_HOST_DEVICE U32x4 philox4x32_10(U32x4 c, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    philox_round(c.x, c.y, c.z, c.w, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return c;
}

// What a stream of random numbers is for; part of the counter, so the streams never overlap.
enum class Domain : uint32_t { kProjection = 0, kRounding = 1 };

// Four random words for (seed, domain, stream, count, group): element e of a stream uses word
// e % 4 of group e / 4.
EMBER_HOST_DEVICE U32x4 random_words(uint64_t seed, Domain domain, uint32_t stream, uint32_t count, uint32_t group) {
  return philox4x32_10(U32x4{group, static_cast<uint32_t>(domain), stream, count}, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

// ---- a standard normal pair from two words (Box-Muller) ----------------------------------------
// ln(x) for x in (0, 1]: x = 2^e·m with m in [√½, √2), ln(1+f) = 2·atanh(s), s = f/(2+f),
// |s| ≤ 0.172, series through s⁹ (truncation < 1e-9 relative).
EMBER_HOST_DEVICE float log_unit(float x) {
  uint32_t bits = float_as_bits(x);
  int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  uint32_t mbits = (bits & 0x007FFFFFu) | 0x3F800000u;  // m in [1, 2)
  const bool high = mbits > 0x3FB504F3u;                // m > √2: use m/2 (exact)
  mbits -= high ? 0x00800000u : 0u;
  e += high ? 1 : 0;
  const float f = sub(bits_as_float(mbits), 1.0f);
  const float s = div(f, add(2.0f, f)), z = mul(s, s);
  float poly = 0.2222222222f;               // 2/9
  poly = add(mul(poly, z), 0.2857142857f);  // 2/7
  poly = add(mul(poly, z), 0.4f);           // 2/5
  poly = add(mul(poly, z), 0.6666666667f);  // 2/3
  poly = add(mul(poly, z), 2.0f);
  const float ef = static_cast<float>(e);
  // ln2 split so that e·ln2_hi is exact for |e| < 2^8.
  return add(mul(ef, 0.693145752f), add(mul(ef, 1.42860677e-06f), mul(s, poly)));
}

// sin and cos of 2π·u for u in [0, 1): quarter turns are exact, the rest is |a| ≤ π/4 with
// Taylor series through a⁹ / a¹⁰ (truncation < 2e-9).
EMBER_HOST_DEVICE void sincos_turns(float u, float& sin_out, float& cos_out) {
  const float v = mul(u, 4.0f);             // exact
  int32_t q = static_cast<int32_t>(v);      // quadrant 0..3
  float r = sub(v, static_cast<float>(q));  // exact, [0, 1)
  const bool up = r > 0.5f;
  r = up ? sub(r, 1.0f) : r;  // exact, [-0.5, 0.5]
  q += up ? 1 : 0;
  const float a = mul(r, 1.57079637f), a2 = mul(a, a);
  float sp = 2.75573192e-06f;              // 1/9!
  sp = sub(mul(sp, a2), 1.98412698e-04f);  // 1/7!
  sp = add(mul(sp, a2), 8.33333333e-03f);  // 1/5!
  sp = sub(mul(sp, a2), 1.66666667e-01f);  // 1/3!
  const float s = add(a, mul(mul(a, a2), sp));
  float cp = -2.75573192e-07f;             // -1/10!
  cp = add(mul(cp, a2), 2.48015873e-05f);  // 1/8!
  cp = sub(mul(cp, a2), 1.38888889e-03f);  // 1/6!
  cp = add(mul(cp, a2), 4.16666667e-02f);  // 1/4!
  cp = sub(mul(cp, a2), 0.5f);             // 1/2!
  const float c = add(1.0f, mul(a2, cp));
  // Rotate by q quarter turns: (s, c), (c, −s), (−s, −c), (−c, s). Selects and sign flips are
  // exact, and branch-free so the CPU loop vectorizes.
  const bool odd = (q & 1) != 0;
  const float bs = odd ? c : s, bc = odd ? s : c;
  sin_out = (q & 2) ? -bs : bs;
  cos_out = ((q + 1) & 2) ? -bc : bc;
}

// The radius of a Box-Muller pair from its first word: √(−2·ln u), u in (0, 1].
EMBER_HOST_DEVICE float normal_radius(uint32_t w0) {
  const float u0 = mul(static_cast<float>((w0 >> 8) + 1u), 5.9604644775390625e-08f);  // exact
  return sqrt_rn(mul(-2.0f, log_unit(u0)));
}

// The angle of a Box-Muller pair from its second word, as a fraction of a turn in [0, 1).
EMBER_HOST_DEVICE float normal_turns(uint32_t w1) {
  return mul(static_cast<float>(w1 >> 8), 5.9604644775390625e-08f);  // exact
}

// Two independent N(0, 1) values from two random words.
EMBER_HOST_DEVICE void normal_pair(uint32_t w0, uint32_t w1, float& z0, float& z1) {
  const float radius = normal_radius(w0);
  float s, c;
  sincos_turns(normal_turns(w1), s, c);
  z0 = mul(radius, c);
  z1 = mul(radius, s);
}

// Four N(0, 1) values: elements 4·group .. 4·group+3 of a stream.
EMBER_HOST_DEVICE void normal4(uint64_t seed, Domain domain, uint32_t stream, uint32_t count, uint32_t group,
                               float (&z)[4]) {
  const U32x4 w = random_words(seed, domain, stream, count, group);
  normal_pair(w.x, w.y, z[0], z[1]);
  normal_pair(w.z, w.w, z[2], z[3]);
}

}  // namespace ember::random
