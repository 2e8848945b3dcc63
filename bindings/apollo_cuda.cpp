// apollo family: the CUDA kernel table and registrations.
#include "apollo_ops.h"
#include "device_cuda.h"

namespace ember::bindings {

constexpr apollo::Kernels kApolloCuda{&apollo::projection_cuda, &apollo::channel_sumsq_cuda, &apollo::moments_cuda,
                                      &apollo::finalize_cuda, &apollo::update_cuda};

TORCH_LIBRARY_IMPL(ember, CUDA, m) { ApolloOps<CudaDevice, kApolloCuda>::register_impls(m); }

}  // namespace ember::bindings
