// Macros and small helpers shared by every family's host and device code. Torch-free.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define EMBER_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define EMBER_HOST_DEVICE inline
#endif

namespace ember {

// Input element types a kernel may be handed (the binding maps torch dtypes onto these).
enum class ScalarType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// The one dtype dispatch of the typed launchers: calls f(TypeTag<T>{}) with T the element type of
// t among Float32 / Float16 / BFloat16 (the CPU passes float, c10::Half, c10::BFloat16; CUDA
// float, __half, __nv_bfloat16) and returns what f returns.
template <class T>
struct TypeTag {
  using type = T;
};

template <class Float32, class Float16, class BFloat16, class F>
decltype(auto) dispatch_float(ScalarType t, F&& f) {
  switch (t) {
    case ScalarType::kFloat16: return f(TypeTag<Float16>{});
    case ScalarType::kBFloat16: return f(TypeTag<BFloat16>{});
    default: return f(TypeTag<Float32>{});
  }
}

// What TMA (and the 16-byte vector loads) need of a base address: non-null and 16-byte aligned.
inline bool aligned16(const void* ptr) { return ptr != nullptr && reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

EMBER_HOST_DEVICE constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

EMBER_HOST_DEVICE uint32_t float_as_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

EMBER_HOST_DEVICE float bits_as_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

}  // namespace ember
