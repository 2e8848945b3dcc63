// The CPU kernels' SIMD clones: GCC compiles a marked function once per target and picks the
// best one for the CPU at load time (ifunc), so one build runs AVX-512, AVX2 or baseline x86-64.
//   EMBER_CPU_CLONES       AVX2 and baseline: memory-bound loops, where 16 lanes add little
//   EMBER_CPU_WIDE_CLONES  AVX-512, AVX2 and baseline: compute-bound loops, where 16 lanes pay
// Elsewhere (another compiler or architecture) both are empty: one auto-vectorized version.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EMBER_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#define EMBER_CPU_WIDE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EMBER_CPU_CLONES
#define EMBER_CPU_WIDE_CLONES
#endif
