// Per-sample Cholesky factorisation of a small symmetric positive-definite matrix, its
// log-determinant and its inverse: the small-matrix work of the Brenier-map log-determinant
// (DESIGN.md op 3). Row-major n x n, one sample per call; one header for CPU and CUDA.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/host_device.h"

namespace ivae::math {

// What a factorisation found (the op's `info` output, LAPACK's convention for positive values).
enum CholeskyStatus : int32_t {
  kCholeskyNonFinite = -1,  // a NaN or infinite pivot: the input carried NaN/Inf
  kCholeskyOk = 0,
  // k > 0: the leading minor of order k is not positive definite
};

// In place: the strict lower triangle of `a` becomes that of L, with a = L Lᵀ, and the diagonal
// holds 1 / L_jj (what the solves below multiply by; divisions would dominate their cost). The
// strict upper triangle is not read or written. Returns kCholeskyOk, kCholeskyNonFinite, or k > 0
// as above.
template <typename T>
IVAE_HD int32_t cholesky_lower(T* a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    T* row_j = a + j * n;
    T pivot = row_j[j];
    for (int64_t k = 0; k < j; ++k) pivot -= row_j[k] * row_j[k];
    if (!(pivot - pivot == T(0))) return kCholeskyNonFinite;  // NaN or ±Inf
    if (!(pivot > T(0))) return static_cast<int32_t>(j + 1);
    const T inv_diag = T(1) / std::sqrt(pivot);
    row_j[j] = inv_diag;
    for (int64_t i = j + 1; i < n; ++i) {
      T* row_i = a + i * n;
      T s = row_i[j];
      for (int64_t k = 0; k < j; ++k) s -= row_i[k] * row_j[k];
      row_i[j] = s * inv_diag;
    }
  }
  return kCholeskyOk;
}

// log det(L Lᵀ) = 2 Σ log L_jj = −2 Σ log(1 / L_jj), from cholesky_lower's factor.
template <typename T>
IVAE_HD T cholesky_logdet(const T* L, int64_t n) {
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += std::log(L[j * n + j]);
  return T(-2) * sum;
}

// inv = (L Lᵀ)⁻¹ = Tᵀ T with T = L⁻¹, from cholesky_lower's factor (row-major n x n; `L` is
// overwritten by T). Both steps are row updates (axpy over contiguous rows), which vectorise;
// column-by-column substitutions would be chains of dependent reductions.
template <typename T>
IVAE_HD void cholesky_inverse(T* L, T* inv, int64_t n) {
  // T row by row into inv: T_j = (e_j − Σ_{k<j} L_jk T_k) / L_jj.
  for (int64_t j = 0; j < n; ++j) {
    T* row = inv + j * n;
    for (int64_t c = 0; c < n; ++c) row[c] = c == j ? T(1) : T(0);
    for (int64_t k = 0; k < j; ++k) {
      const T l = L[j * n + k];
      const T* t_k = inv + k * n;
      for (int64_t c = 0; c <= k; ++c) row[c] -= l * t_k[c];
    }
    const T inv_diag = L[j * n + j];
    for (int64_t c = 0; c <= j; ++c) row[c] *= inv_diag;
  }
  for (int64_t e = 0; e < n * n; ++e) L[e] = inv[e];  // T, lower triangular
  // inv = Tᵀ T = Σ_k T_kᵀ T_k (row k of T is zero beyond column k).
  for (int64_t e = 0; e < n * n; ++e) inv[e] = 0;
  for (int64_t k = 0; k < n; ++k) {
    const T* t_k = L + k * n;
    for (int64_t i = 0; i <= k; ++i) {
      const T weight = t_k[i];
      T* out = inv + i * n;
      for (int64_t c = 0; c <= k; ++c) out[c] += weight * t_k[c];
    }
  }
}

// The op's per-sample step after the Hessian products: hess += αI, factorised in place; returns
// the status (the op's `info`), writes logdet and, if `inv` is not null, Hess⁻¹ — NaN for both
// when the Hessian is not positive definite (the non-PD policy is applied by the caller).
template <typename T>
IVAE_HD int32_t shifted_logdet_and_inverse(T* hess, int64_t n, T alpha, T* logdet, T* inv) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t j = 0; j < n; ++j) hess[j * n + j] += alpha;
  const int32_t status = cholesky_lower(hess, n);
  *logdet = status == kCholeskyOk ? cholesky_logdet(hess, n) : nan;
  if (inv) {
    if (status == kCholeskyOk) {
      cholesky_inverse(hess, inv, n);
    } else {
      for (int64_t i = 0; i < n * n; ++i) inv[i] = nan;
    }
  }
  return status;
}

}  // namespace ivae::math
