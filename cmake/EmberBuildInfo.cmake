# Build facts for ember.build_info() (version, build mode, torch, CUDA, CUTLASS, compiler), written
# as C string literals into a generated header rather than passed as -D definitions: a ";" in a
# value would split a CMake list there, and a '"' or "\" would end or escape the C string.
# tests/test_build_mode.py runs this file with `cmake -P` on values holding such characters.

# OUT = VALUE as the body of a C string literal: "\" and '"' escaped, line breaks as spaces.
function(ember_c_string out value)
  string(REPLACE "\\" "\\\\" value "${value}")
  string(REPLACE "\"" "\\\"" value "${value}")
  string(REGEX REPLACE "[\r\n]" " " value "${value}")
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

# This folder, read when the file is included: inside a function CMAKE_CURRENT_LIST_DIR is the caller's.
set(EMBER_BUILD_INFO_DIR ${CMAKE_CURRENT_LIST_DIR})

# Writes HEADER from the build's variables (unset ones become "").
function(ember_write_build_info header)
  ember_c_string(EMBER_INFO_VERSION "${PROJECT_VERSION}")
  ember_c_string(EMBER_INFO_BUILD_MODE "${EMBER_BUILD_MODE}")
  ember_c_string(EMBER_INFO_TORCH_VERSION "${Torch_VERSION}")
  ember_c_string(EMBER_INFO_CUDA_ARCHS "${EMBER_CUDA_ARCHS_STRING}")
  ember_c_string(EMBER_INFO_CUDA_VERSION "${CMAKE_CUDA_COMPILER_VERSION}")
  ember_c_string(EMBER_INFO_CUTLASS_VERSION "${EMBER_CUTLASS_VERSION}")
  ember_c_string(EMBER_INFO_CXX_COMPILER "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}")
  configure_file(${EMBER_BUILD_INFO_DIR}/build_info.h.in ${header} @ONLY)
endfunction()

# `cmake -DEMBER_BUILD_INFO_HEADER=FILE -DEMBER_BUILD_MODE=... -P cmake/EmberBuildInfo.cmake`
if(CMAKE_SCRIPT_MODE_FILE AND EMBER_BUILD_INFO_HEADER)
  ember_write_build_info(${EMBER_BUILD_INFO_HEADER})
endif()
