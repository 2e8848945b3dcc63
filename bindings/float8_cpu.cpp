// float8 family: the CPU kernel table and registrations. No CUTLASS GEMM: fp8_gemm emulates.
#include "float8_ops.h"

namespace ember::bindings {

constexpr float8::Kernels kFloat8Cpu{&float8::quantize_cpu, &float8::dequantize_cpu, nullptr, nullptr};

TORCH_LIBRARY_IMPL(ember, CPU, m) { Float8Ops<CpuDevice, kFloat8Cpu>::register_impls(m); }

}  // namespace ember::bindings
