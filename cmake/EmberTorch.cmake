# Imports the torch installed in the building Python as the target `ember_torch` (headers, the
# libraries ember links, the libstdc++ ABI flag). ember needs no more than that, so it skips
# torch's own CMake config, which insists on a full CUDA toolkit layout even for CPU-only builds.
execute_process(
  COMMAND ${Python_EXECUTABLE} -c "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__.split('+')[0]); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
  OUTPUT_VARIABLE _ember_torch OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _ember_torch_rc)
if(NOT _ember_torch_rc EQUAL 0)
  message(FATAL_ERROR "ember: torch must be installed before building ember (pip install torch), "
                      "and pip needs --no-build-isolation so the build sees it")
endif()
string(REPLACE "\n" ";" _ember_torch "${_ember_torch}")
list(GET _ember_torch 0 EMBER_TORCH_DIR)
list(GET _ember_torch 1 Torch_VERSION)
list(GET _ember_torch 2 _ember_torch_abi)

add_library(ember_torch INTERFACE)
target_include_directories(ember_torch SYSTEM INTERFACE
  "${EMBER_TORCH_DIR}/include" "${EMBER_TORCH_DIR}/include/torch/csrc/api/include")
target_compile_definitions(ember_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_ember_torch_abi})
set(_ember_torch_libs c10 torch torch_cpu)
if(EMBER_WITH_CUDA)
  list(APPEND _ember_torch_libs c10_cuda torch_cuda)
endif()
foreach(_lib IN LISTS _ember_torch_libs)
  find_library(EMBER_TORCH_LIB_${_lib} ${_lib} PATHS "${EMBER_TORCH_DIR}/lib" NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(ember_torch INTERFACE "${EMBER_TORCH_LIB_${_lib}}")
endforeach()
message(STATUS "ember: torch ${Torch_VERSION} from ${EMBER_TORCH_DIR}")
