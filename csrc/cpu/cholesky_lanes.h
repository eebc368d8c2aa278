// math/cholesky.h's per-sample step for kLanes samples at once, one sample per SIMD lane: the d x d
// factorisations are short dependent loops (d ~ 16), which one sample at a time leaves the vector
// units idle. Element (i, j) of lane l's matrix is at a[(i * n + j) * L + l]. Same algorithm,
// results and status convention as math/cholesky.h (the CUDA kernels run that one, a thread per
// sample); only the layout differs. CPU only.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/cpu_clones.h"
#include "math/cholesky.h"

namespace ivae::cpu {

template <typename T>
constexpr int kLanes = static_cast<int>(64 / sizeof(T));  // one AVX-512 register of samples

// cholesky_lower per lane. A lane that fails records its first failure in status[l] (as
// cholesky_lower returns it) and carries on with unit pivots, so the other lanes are unaffected;
// its factor is garbage and the caller reports NaN for it.
template <typename T, int L>
IVAE_CLONE_INLINE void cholesky_lower_lanes(T* a, int64_t n, int32_t* status) {
  for (int l = 0; l < L; ++l) status[l] = math::kCholeskyOk;
  for (int64_t j = 0; j < n; ++j) {
    T* row_j = a + j * n * L;
    T pivot[L], inv_diag[L];
#pragma omp simd
    for (int l = 0; l < L; ++l) pivot[l] = row_j[j * L + l];
    for (int64_t k = 0; k < j; ++k) {
#pragma omp simd
      for (int l = 0; l < L; ++l) pivot[l] -= row_j[k * L + l] * row_j[k * L + l];
    }
    for (int l = 0; l < L; ++l) {
      const bool non_finite = !(pivot[l] - pivot[l] == T(0));
      if (status[l] == math::kCholeskyOk && (non_finite || !(pivot[l] > T(0)))) {
        status[l] = non_finite ? math::kCholeskyNonFinite : static_cast<int32_t>(j + 1);
      }
      if (status[l] != math::kCholeskyOk) pivot[l] = T(1);
    }
#pragma omp simd
    for (int l = 0; l < L; ++l) {
      inv_diag[l] = T(1) / std::sqrt(pivot[l]);
      row_j[j * L + l] = inv_diag[l];
    }
    for (int64_t i = j + 1; i < n; ++i) {
      T* row_i = a + i * n * L;
      T s[L];
#pragma omp simd
      for (int l = 0; l < L; ++l) s[l] = row_i[j * L + l];
      for (int64_t k = 0; k < j; ++k) {
#pragma omp simd
        for (int l = 0; l < L; ++l) s[l] -= row_i[k * L + l] * row_j[k * L + l];
      }
#pragma omp simd
      for (int l = 0; l < L; ++l) row_i[j * L + l] = s[l] * inv_diag[l];
    }
  }
}

// cholesky_inverse per lane: inv = Tᵀ T with T = L⁻¹ (t: n*n*L scratch).
template <typename T, int L>
IVAE_CLONE_INLINE void cholesky_inverse_lanes(const T* a, T* t, T* inv, int64_t n) {
  for (int64_t e = 0; e < n * n * L; ++e) t[e] = T(0);
  for (int64_t j = 0; j < n; ++j) {  // T_j = (e_j − Σ_{k<j} L_jk T_k) / L_jj, row by row
    T* row = t + j * n * L;
#pragma omp simd
    for (int l = 0; l < L; ++l) row[j * L + l] = T(1);
    for (int64_t k = 0; k < j; ++k) {
      const T* l_jk = a + (j * n + k) * L;
      const T* t_k = t + k * n * L;
      for (int64_t c = 0; c <= k; ++c) {
#pragma omp simd
        for (int l = 0; l < L; ++l) row[c * L + l] -= l_jk[l] * t_k[c * L + l];
      }
    }
    const T* inv_diag = a + (j * n + j) * L;
    for (int64_t c = 0; c <= j; ++c) {
#pragma omp simd
      for (int l = 0; l < L; ++l) row[c * L + l] *= inv_diag[l];
    }
  }
  for (int64_t e = 0; e < n * n * L; ++e) inv[e] = T(0);
  for (int64_t k = 0; k < n; ++k) {  // Tᵀ T = Σ_k T_kᵀ T_k
    const T* t_k = t + k * n * L;
    for (int64_t i = 0; i <= k; ++i) {
      T* out = inv + i * n * L;
      for (int64_t c = 0; c <= k; ++c) {
#pragma omp simd
        for (int l = 0; l < L; ++l) out[c * L + l] += t_k[i * L + l] * t_k[c * L + l];
      }
    }
  }
}

// shifted_logdet_and_inverse per lane: a += αI, factorised in place; status, logdet and (if inv is
// not null; t is then n*n*L scratch) the inverse, NaN where a lane's matrix is not PD.
template <typename T, int L>
IVAE_CLONE_INLINE void shifted_logdet_and_inverse_lanes(T* a, int64_t n, T alpha, int32_t* status, T* logdet,
                                                        T* t, T* inv) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t j = 0; j < n; ++j) {
#pragma omp simd
    for (int l = 0; l < L; ++l) a[(j * n + j) * L + l] += alpha;
  }
  cholesky_lower_lanes<T, L>(a, n, status);
  for (int l = 0; l < L; ++l) {
    T sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += std::log(a[(j * n + j) * L + l]);
    logdet[l] = status[l] == math::kCholeskyOk ? T(-2) * sum : nan;
  }
  if (!inv) return;
  cholesky_inverse_lanes<T, L>(a, t, inv, n);
  for (int l = 0; l < L; ++l) {
    if (status[l] == math::kCholeskyOk) continue;
    for (int64_t e = 0; e < n * n; ++e) inv[e * L + l] = nan;
  }
}

}  // namespace ivae::cpu
