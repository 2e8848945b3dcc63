// float8 family: the CUDA kernel table (quantize, dequantize, the CUTLASS fp8 GEMMs) and
// registrations.
#include "device_cuda.h"
#include "float8_ops.h"

namespace ember::bindings {

constexpr float8::Kernels kFloat8Cuda{&float8::quantize_cuda, &float8::dequantize_cuda, &float8::gemm_cuda,
                                      &float8::gemm_cuda_workspace_bytes};

TORCH_LIBRARY_IMPL(ember, CUDA, m) { Float8Ops<CudaDevice, kFloat8Cuda>::register_impls(m); }

}  // namespace ember::bindings
