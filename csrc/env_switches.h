// Every EMBER_* environment switch the native library reads, declared once: its name, what it is
// for, and whether it is a test hook (set by the tests to reach a path; never needed in normal
// use). python/ember/env.py declares the same switches (read_by="native") with their types and
// defaults, and tests/test_env_switches.py checks that the two lists agree. They are read through
// env_value() at each use, never with getenv directly: the tests change them from case to case.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string_view>

namespace ember {

struct EnvSwitch {
  const char* name;
  const char* purpose;
  bool test_hook;
};

inline constexpr EnvSwitch kEnvSwitches[] = {
    {"EMBER_CE_SOFTMAX_GEMM",
     "1 / 0: linear_cross_entropy's gradients through the softmax-gradient GEMMs or not (default: on CUDA bf16)",
     false},
    {"EMBER_FP8_GEMM_STRICT", "a CUTLASS fp8 GEMM that refuses its problem is an error, not a fallback", true},
    {"EMBER_SPARSE_STRICT", "a sparse GEMM kernel that refuses its problem is an error, not a fallback", true},
    {"EMBER_CE_STRICT", "a softmax-gradient GEMM that refuses its problem is an error, not a fallback", true},
    {"EMBER_CE_CUDA_ORDER", "the CPU rows kernel sums in the CUDA kernel's order", true},
    {"EMBER_SPARSE_TILE_BYTES", "bytes of one tile of the tiled bitmask path (default 8 MiB)", true},
};

// The switch's value, or nullptr when it is unset or empty; `name` must be declared above.
inline const char* env_value(const char* name) {
  bool declared = false;
  for (const auto& s : kEnvSwitches) declared = declared || std::string_view(s.name) == name;
  TORCH_CHECK(declared, "ember: the environment switch ", name, " is not declared in csrc/env_switches.h");
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

}  // namespace ember
