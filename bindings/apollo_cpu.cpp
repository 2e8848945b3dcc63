// apollo family: the CPU kernel table and registrations. The CPU projects block by block inside
// the step driver, so it has no channel_sumsq / moments kernels.
#include "apollo_ops.h"

namespace ember::bindings {

constexpr apollo::Kernels kApolloCpu{&apollo::projection_cpu, nullptr, nullptr, &apollo::finalize_cpu,
                                     &apollo::update_cpu};

TORCH_LIBRARY_IMPL(ember, CPU, m) { ApolloOps<CpuDevice, kApolloCpu>::register_impls(m); }

}  // namespace ember::bindings
