// The *_STRICT environment switches of the kernel dispatchers (EMBER_FP8_GEMM_STRICT,
// EMBER_SPARSE_STRICT, EMBER_CE_STRICT): the tests set them on shapes the device's kernels must
// take, so that a kernel refusing them is an error instead of hiding behind the fallback.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace ember {

// Whether the switch `name` is set to something other than "0".
inline bool strict_mode(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::string(v) != "0";
}

// Fails with "<op>: <what> (<name> is set, so no fallback)" when the switch is on.
template <typename... What>
void check_not_strict(const char* name, const char* op, const What&... what) {
  TORCH_CHECK(!strict_mode(name), op, ": ", what..., " (", name, " is set, so no fallback)");
}

}  // namespace ember
