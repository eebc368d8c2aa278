// How a broadcast parameter maps onto a [B, d] grid (torch-free: used by CUDA kernels too).
#pragma once

#include <cstdint>

namespace ivae {

// Element (i, j) of the grid reads p[i * row_stride + j * col_stride] in p's contiguous storage.
struct BroadcastLayout {
  int64_t row_stride = 0;  // d ([B, d]), 1 ([B, 1]) or 0 (shared by all rows)
  int64_t col_stride = 0;  // 1, or 0 (one value for the whole row)
  bool full(int64_t dim) const { return row_stride == dim && col_stride == 1; }
  bool shared_by_rows() const { return row_stride == 0; }
  bool one_per_row() const { return row_stride != 0 && col_stride == 0; }
};

}  // namespace ivae
