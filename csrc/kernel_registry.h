// The kernels a dispatcher must not pick, by the selftest's names ("float8.gemm.cutlass_fast_small",
// "cross_entropy.softmax_grad_gemm", "sparse.grouped", ...). Python's ember.kernels sets them (a
// kernel that failed its selftest under --training.kernel_fallback, or EMBER_DISABLE_KERNELS);
// each dispatcher asks right where its *_STRICT fallback is (strict_mode.h) and takes that
// fallback for a disabled kernel.
#pragma once

#include <string>
#include <vector>

namespace ember {

// Whether kernel `name` is disabled (one lookup under a lock: called once per dispatch).
bool kernel_disabled(const char* name);

// Exactly these kernels disabled from now on.
void set_disabled_kernels(const std::vector<std::string>& names);

// The disabled kernels, sorted.
std::vector<std::string> disabled_kernels();

}  // namespace ember
