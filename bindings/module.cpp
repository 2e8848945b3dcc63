// ember._C: the extension module. Importing it registers torch.ops.ember.* (the TORCH_LIBRARY
// blocks in bindings/); the pybind11 side reports how the library was built and holds the
// registry of disabled kernels (csrc/kernel_registry.h).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ember_build_info.h"
#include "index_math.h"
#include "kernel_registry.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "ember native library: torch.ops.ember.* kernels";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = EMBER_VERSION;
    info["build_mode"] = EMBER_BUILD_MODE;
    info["torch"] = EMBER_TORCH_VERSION;
#ifdef EMBER_WITH_CUDA
    info["with_cuda"] = true;
#else
    info["with_cuda"] = false;
#endif
    info["cuda_archs"] = EMBER_CUDA_ARCHS;
    info["cuda"] = EMBER_CUDA_VERSION;
    info["cutlass"] = EMBER_CUTLASS_VERSION;
    info["cxx_compiler"] = EMBER_CXX_COMPILER;
    return info;
  });
  m.def("set_disabled_kernels", &ember::set_disabled_kernels,
        "the kernels the dispatchers must not pick (ember.kernels owns the list)");
  m.def("disabled_kernels", &ember::disabled_kernels, "the kernels the dispatchers must not pick");
  m.def("_index_math", &ember::bindings::index_math, "test hook: the kernels' index math at the given sizes");
}
