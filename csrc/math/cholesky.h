// Per-sample Cholesky factorisation of a small symmetric positive-definite matrix, its
// log-determinant and its inverse: the small-matrix work of the Brenier-map log-determinant
// (DESIGN.md op 3). Row-major n x n, one sample per call; one header for CPU and CUDA.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace ivae::math {

// What a factorisation found (the op's `info` output, LAPACK's convention for positive values).
enum CholeskyStatus : int32_t {
  kCholeskyNonFinite = -1,  // a NaN or infinite pivot: the input carried NaN/Inf
  kCholeskyOk = 0,
  // k > 0: the leading minor of order k is not positive definite
};

// In place: the lower triangle of `a` becomes L with a = L Lᵀ (the strict upper triangle is not
// read or written). Returns kCholeskyOk, kCholeskyNonFinite, or k > 0 as above.
template <typename T>
IVAE_HD int32_t cholesky_lower(T* a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T* row_j = a + j * n;
    T pivot = row_j[j];
    for (int64_t k = 0; k < j; ++k) pivot -= row_j[k] * row_j[k];
    if (!(pivot - pivot == T(0))) return kCholeskyNonFinite;  // NaN or ±Inf
    if (!(pivot > T(0))) return static_cast<int32_t>(j + 1);
    const T diag = std::sqrt(pivot);
    row_j[j] = diag;
    const T inv_diag = T(1) / diag;
    for (int64_t i = j + 1; i < n; ++i) {
      T* row_i = a + i * n;
      T s = row_i[j];
      for (int64_t k = 0; k < j; ++k) s -= row_i[k] * row_j[k];
      row_i[j] = s * inv_diag;
    }
  }
  return kCholeskyOk;
}

// log det(L Lᵀ) = 2 Σ log L_jj.
template <typename T>
IVAE_HD T cholesky_logdet(const T* L, int64_t n) {
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += std::log(L[j * n + j]);
  return T(2) * sum;
}

// inv = (L Lᵀ)⁻¹, row-major n x n (symmetric: column i is computed into row i). Each column is a
// forward then a backward substitution done in place in its row of `inv`.
template <typename T>
IVAE_HD void cholesky_inverse(const T* L, T* inv, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T* y = inv + i * n;
    for (int64_t j = 0; j < n; ++j) {  // L y = e_i (y_j = 0 for j < i)
      T s = j == i ? T(1) : T(0);
      for (int64_t k = i; k < j; ++k) s -= L[j * n + k] * y[k];
      y[j] = j < i ? T(0) : s / L[j * n + j];
    }
    for (int64_t j = n - 1; j >= 0; --j) {  // Lᵀ x = y, x overwriting y
      T s = y[j];
      for (int64_t k = j + 1; k < n; ++k) s -= L[k * n + j] * y[k];
      y[j] = s / L[j * n + j];
    }
  }
}

}  // namespace ivae::math
