// torch dtype -> ember::ScalarType, for the ATen-side code (bindings and the csrc drivers).
#pragma once

#include <ATen/ATen.h>

#include "ember/common.h"

namespace ember {

// float32 / float16 / bfloat16; anything else is an error naming the op and the argument.
inline ScalarType scalar_type_of(const at::Tensor& t, const char* op = "ember", const char* arg = "tensor") {
  switch (t.scalar_type()) {
    case at::kFloat: return ScalarType::kFloat32;
    case at::kHalf: return ScalarType::kFloat16;
    case at::kBFloat16: return ScalarType::kBFloat16;
    default: TORCH_CHECK(false, op, ": ", arg, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

}  // namespace ember
