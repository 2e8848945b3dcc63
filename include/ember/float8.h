// float8 family: the kernels' torch-free API (parameter structs and launchers).
#pragma once

#include "ember/common.h"
#include "ember/fp8.h"

namespace ember::float8 {

// How values share a scale. y is x, or xᵀ when transposed; rows/cols below are y's.
//   kTensor: one scale                          scale shape ()
//   kRow:    one per row of y                   (rows, 1)
//   kBlock:  one per 1×block run of a row       (rows, ceil(cols/block))   activations
//   kTile:   one per block×block tile           (ceil(rows/block), ceil(cols/block))   weights
enum class Granularity : int { kTensor = 0, kRow = 1, kBlock = 2, kTile = 3 };

struct QuantizeParams {
  const void* x = nullptr;  // row-major, contiguous: x_rows × x_cols
  ScalarType x_type = ScalarType::kFloat32;
  int64_t x_rows = 0;
  int64_t x_cols = 0;
  bool transpose = false;  // quantize y = xᵀ (read x column-wise, never materialize xᵀ)
  fp8::Format format = fp8::Format::kE4M3;
  Granularity granularity = Granularity::kTensor;
  int block = 128;             // run / tile edge for kBlock and kTile
  uint8_t* q = nullptr;        // y_rows × y_cols fp8 bits, row-major
  float* scale = nullptr;      // scale_rows × scale_cols, row-major
  float* workspace = nullptr;  // CUDA, kTensor / kRow: workspace_floats() floats

  int64_t y_rows() const { return transpose ? x_cols : x_rows; }
  int64_t y_cols() const { return transpose ? x_rows : x_cols; }
  // Rows and columns of y that one scale covers.
  int64_t group_rows() const {
    return granularity == Granularity::kTensor ? y_rows() : granularity == Granularity::kTile ? block : 1;
  }
  int64_t group_cols() const {
    return granularity == Granularity::kBlock || granularity == Granularity::kTile ? block : y_cols();
  }
  int64_t scale_rows() const { return granularity == Granularity::kTensor ? 1 : ceil_div(y_rows(), group_rows()); }
  int64_t scale_cols() const {
    return granularity == Granularity::kTensor || granularity == Granularity::kRow ? 1
                                                                                   : ceil_div(y_cols(), group_cols());
  }
  int64_t workspace_floats() const {
    return granularity == Granularity::kTensor ? 1 : granularity == Granularity::kRow ? y_rows() : 0;
  }
};

// Block edges the kernels support (the CUDA kernel works on 128×128 regions of y).
EMBER_HOST_DEVICE constexpr bool supported_block(int block) {
  return block == 16 || block == 32 || block == 64 || block == 128;
}

void quantize_cpu(const QuantizeParams& p, void* stream = nullptr);  // stream: unused (same type as CUDA's)
// stream: a cudaStream_t (kept opaque so this header needs no CUDA).
void quantize_cuda(const QuantizeParams& p, void* stream);

}  // namespace ember::float8
