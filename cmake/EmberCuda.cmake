# Decides whether the CUDA kernels are built, and smooths over how CUDA builds of torch from PyPI
# lay out their CUDA pieces (cuBLAS/cuSPARSE headers under site-packages/nvidia/cu13, which
# ATen's CUDA headers include).
#
# As other extension packages do (FORCE_CUDA in xformers, mmcv, detectron2): CUDA kernels are
# built when torch has CUDA, nvcc is found, and either a GPU is visible or they are asked for
# (EMBER_CUDA=1, or TORCH_CUDA_ARCH_LIST set: a login node building for its GPU nodes).
# EMBER_BUILD_MODE says which, and why, in the build log and in `ember info`.
set(EMBER_WITH_CUDA OFF)
set(EMBER_CUDA_ARCHS "")
set(EMBER_CUDA_ARCHS_STRING "")

set(_ember_cuda_forced OFF)
if(DEFINED ENV{EMBER_CUDA} AND "$ENV{EMBER_CUDA}" MATCHES "^(1|ON|on|yes|YES|true|TRUE)$")
  set(_ember_cuda_forced ON)
  set(_ember_why "EMBER_CUDA=$ENV{EMBER_CUDA}")
elseif(DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT "$ENV{TORCH_CUDA_ARCH_LIST}" STREQUAL "")
  set(_ember_cuda_forced ON)
  set(_ember_why "TORCH_CUDA_ARCH_LIST is set")
endif()

if(DEFINED ENV{EMBER_CUDA} AND "$ENV{EMBER_CUDA}" MATCHES "^(0|OFF|off|no|NO|false|FALSE)$")
  set(EMBER_BUILD_MODE "cpu-only (EMBER_CUDA=$ENV{EMBER_CUDA})")
else()
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c "import torch, os; print(torch.version.cuda or ''); print(os.path.dirname(os.path.dirname(torch.__file__))); print(int(torch.cuda.is_available()))"
    OUTPUT_VARIABLE _ember_torch_out OUTPUT_STRIP_TRAILING_WHITESPACE)
  string(REPLACE "\n" ";" _ember_torch_out "${_ember_torch_out}")
  list(GET _ember_torch_out 0 EMBER_TORCH_CUDA)
  list(GET _ember_torch_out 1 EMBER_SITE_PACKAGES)
  list(GET _ember_torch_out 2 _ember_gpu_visible)
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT EMBER_TORCH_CUDA)
    set(EMBER_BUILD_MODE "cpu-only (torch has no CUDA)")
  elseif(NOT CMAKE_CUDA_COMPILER)
    set(EMBER_BUILD_MODE "cpu-only (no nvcc found)")
  elseif(_ember_cuda_forced)
    set(EMBER_WITH_CUDA ON)
    set(EMBER_BUILD_MODE "cuda (${_ember_why})")
  elseif(_ember_gpu_visible)
    set(EMBER_WITH_CUDA ON)
    set(EMBER_BUILD_MODE "cuda (a GPU is visible)")
  else()
    set(EMBER_BUILD_MODE "cpu-only (no GPU visible; EMBER_CUDA=1 builds the CUDA kernels anyway)")
  endif()
endif()

# EMBER_CUDA=1 asks for CUDA outright (CI, the GPU check): no quiet CPU-only fallback.
if(NOT EMBER_WITH_CUDA AND _ember_cuda_forced)
  message(FATAL_ERROR "ember: ${_ember_why} but the CUDA kernels cannot be built "
                      "(torch CUDA: '${EMBER_TORCH_CUDA}', nvcc: '${CMAKE_CUDA_COMPILER}')")
endif()

if(EMBER_WITH_CUDA)
  if(DEFINED ENV{EMBER_CUDA_ARCHS} AND NOT "$ENV{EMBER_CUDA_ARCHS}" STREQUAL "")
    set(EMBER_CUDA_ARCHS "$ENV{EMBER_CUDA_ARCHS}")
  else()
    set(EMBER_CUDA_ARCHS "90a")
  endif()
  string(REPLACE ";" "," EMBER_CUDA_ARCHS_STRING "${EMBER_CUDA_ARCHS}")
  set(CMAKE_CUDA_ARCHITECTURES ${EMBER_CUDA_ARCHS})
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)

  # PyPI's CUDA torch keeps cuBLAS/cuSPARSE headers in site-packages/nvidia/cu13 (or cu12), not
  # in the toolkit that nvcc came with.
  foreach(_cu cu13 cu12)
    set(_dir "${EMBER_SITE_PACKAGES}/nvidia/${_cu}")
    if(EXISTS "${_dir}/include")
      set(EMBER_CUDA_WHEEL_INCLUDE "${_dir}/include")
      break()
    endif()
  endforeach()
  if(EMBER_CUDA_WHEEL_INCLUDE)
    include_directories(AFTER SYSTEM "${EMBER_CUDA_WHEEL_INCLUDE}")
  endif()

  # ptxas warnings (spills, local memory) fail the build: they are bugs. A serialized wgmma
  # (C7510..C7515) is only "ptxas info", so ptxas_guard.sh, the CUDA compiler launcher, fails it.
  # (A launcher the user set, e.g. ccache, runs inside it.)
  set(CMAKE_CUDA_COMPILER_LAUNCHER "${CMAKE_CURRENT_LIST_DIR}/ptxas_guard.sh" ${CMAKE_CUDA_COMPILER_LAUNCHER})
  set(EMBER_NVCC_FLAGS
    --expt-relaxed-constexpr
    -lineinfo
    -Xptxas=--warn-on-spills,--warn-on-local-memory-usage,--warning-as-error)
  if(DEFINED ENV{EMBER_PTXAS_VERBOSE} AND "$ENV{EMBER_PTXAS_VERBOSE}")
    list(APPEND EMBER_NVCC_FLAGS -Xptxas=-v)
  endif()
  message(STATUS "ember: CUDA ${CMAKE_CUDA_COMPILER_VERSION} for archs ${EMBER_CUDA_ARCHS} (torch CUDA ${EMBER_TORCH_CUDA})")
endif()
