// Torch-free CPU loops of expfam_kl over a block of rows of the [B, d] grid. Each entry point is
// compiled once per x86-64 level (baseline, AVX2, AVX-512) and picked at load time, so the
// loops vectorise on the machine they run on without -march=native at build time.
#pragma once

#include <cstdint>

#include "math/expfam.h"

namespace ivae::cpu {

// `rows` consecutive rows of the grid. q rows have stride `dim`; a p row stride of 0 means
// every row reads the same `dim` values (p broadcast over the batch).
template <typename T>
struct KlRowsInput {
  int64_t rows;
  int64_t dim;
  const T* q_loc;        // [rows, dim]
  const T* q_log_scale;  // [rows, dim]
  const T* p_loc;        // [rows, dim] with row stride p_loc_row_stride
  int64_t p_loc_row_stride;
  const T* p_log_scale;  // [rows, dim] with row stride p_log_scale_row_stride
  int64_t p_log_scale_row_stride;
};

// Destination of one gradient: rows of `row_stride` (0: one row reused by every row), whose
// values are stored, or added (to reduce a gradient over the batch).
template <typename T>
struct GradRows {
  T* data;
  int64_t row_stride;
  bool accumulate;
};

template <typename T>
struct KlRowsGrad {
  const T* grad;          // [rows] (reduction "sum") or [rows, dim] ("none")
  bool grad_per_element;  // true for "none"
  GradRows<T> q_loc, q_log_scale, p_loc, p_log_scale;
};

// Writes KL per element into `out` (rows of out_row_stride; 0 = a scratch row) and, if
// `row_sums` is not null, each row's sum into row_sums[r].
void expfam_kl_forward_rows(math::ExpFamily family, const KlRowsInput<float>& in, float* out,
                            int64_t out_row_stride, float* row_sums);
void expfam_kl_forward_rows(math::ExpFamily family, const KlRowsInput<double>& in, double* out,
                            int64_t out_row_stride, double* row_sums);

void expfam_kl_backward_rows(math::ExpFamily family, const KlRowsInput<float>& in,
                             const KlRowsGrad<float>& grad);
void expfam_kl_backward_rows(math::ExpFamily family, const KlRowsInput<double>& in,
                             const KlRowsGrad<double>& grad);

}  // namespace ivae::cpu
