# CUTLASS is header-only. It comes from the nvidia-cutlass wheel, which ships the cutlass/ and
# cute/ headers under cutlass_library/source/include; EMBER_CUTLASS_DIR overrides the location.
# Nothing is downloaded. See third_party/README.md (how CUTLASS is found).
if(DEFINED ENV{EMBER_CUTLASS_DIR} AND NOT "$ENV{EMBER_CUTLASS_DIR}" STREQUAL "")
  set(EMBER_CUTLASS_DIR "$ENV{EMBER_CUTLASS_DIR}")
else()
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
    OUTPUT_VARIABLE EMBER_CUTLASS_DIR OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _ember_cutlass_rc ERROR_QUIET)
endif()
if(NOT EXISTS "${EMBER_CUTLASS_DIR}/cutlass/version.h")
  message(FATAL_ERROR "ember: CUTLASS headers not found (looked in '${EMBER_CUTLASS_DIR}'). "
                      "pip install nvidia-cutlass==4.2.0.0, or set EMBER_CUTLASS_DIR to a folder "
                      "holding cutlass/ and cute/, or build CPU-only with EMBER_CUDA=0.")
endif()
file(STRINGS "${EMBER_CUTLASS_DIR}/cutlass/version.h" _v REGEX "#define CUTLASS_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" EMBER_CUTLASS_VERSION "${_v}")
add_library(ember_cutlass INTERFACE)
target_include_directories(ember_cutlass SYSTEM INTERFACE "${EMBER_CUTLASS_DIR}")
message(STATUS "ember: CUTLASS ${EMBER_CUTLASS_VERSION} from ${EMBER_CUTLASS_DIR}")
