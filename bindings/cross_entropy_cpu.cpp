// cross_entropy family: the CPU kernel table and registrations.
#include "cross_entropy_ops.h"

namespace ember::bindings {

constexpr ce::Kernels kCrossEntropyCpu{&ce::rows_forward_cpu, &ce::rows_backward_cpu, &ce::softmax_grad_gemm_cpu,
                                       &ce::softmax_grad_gemm_cpu_workspace_bytes};

TORCH_LIBRARY_IMPL(ember, CPU, m) { CrossEntropyOps<CpuDevice, kCrossEntropyCpu>::register_impls(m); }

}  // namespace ember::bindings
