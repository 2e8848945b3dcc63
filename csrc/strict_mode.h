// The *_STRICT environment switches of the kernel dispatchers (EMBER_FP8_GEMM_STRICT,
// EMBER_SPARSE_STRICT, EMBER_CE_STRICT): the tests set them on shapes the device's kernels must
// take, so that a kernel refusing them is an error instead of hiding behind the fallback. Declared,
// with every other switch, in env_switches.h.
#pragma once

#include <c10/util/Exception.h>

#include <string>

#include "env_switches.h"

namespace ember {

// Whether the switch `name` is set to something other than "0".
inline bool strict_mode(const char* name) {
  const char* v = env_value(name);
  return v != nullptr && std::string(v) != "0";
}

// Fails with "<op>: <what> (<name> is set, so no fallback)" when the switch is on.
template <typename... What>
void check_not_strict(const char* name, const char* op, const What&... what) {
  TORCH_CHECK(!strict_mode(name), op, ": ", what..., " (", name, " is set, so no fallback)");
}

}  // namespace ember
