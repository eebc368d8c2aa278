// Torch-free CPU loops for the Brenier log-determinant's fused steps (math: math/brenier.h and
// math/cholesky.h). Jacobian blocks hold B·d rows (b, j) of H values spaced `ld` apart; [B, H]
// and [B, d, d] arrays are contiguous. Compiled per x86-64 level like icnn_rows.
#pragma once

#include <cstdint>

namespace ivae::cpu {

#define IVAE_BRENIER_ROWS_DECLARE(T)                                                               \
  /* jac = gemm_out + A_kᵀ (gemm_out null: 0); jac_c = jac c_k; next = jac σ'(a_k) (if not null). */ \
  void brenier_jacobian_step_rows(int64_t batch, int64_t dim, int64_t hidden, const T* gemm_out,   \
                                  const T* At_k, const T* c_k, const T* d1_k, T* jac, T* jac_c,    \
                                  int64_t ld, T* next);                                           \
  /* Per sample: hess += αI, Cholesky in place, logdet, info; minv = hess⁻¹ if not null. */        \
  void brenier_hessian_logdet_rows(int64_t batch, int64_t dim, T* hess, T alpha, T* logdet,        \
                                   int32_t* info, T* minv);                                       \
  /* c_bar = Σ_j jac p; then p = 2 c p. */                                                        \
  void brenier_hessian_adjoint_rows(int64_t batch, int64_t dim, int64_t hidden, const T* jac,      \
                                    T* p, int64_t ld, const T* c_k, T* c_bar_k);                  \
  /* jac_bar_prev += m_bar σ'; a_bar_prev += σ'' Σ_j m_bar jac_prev. */                            \
  void brenier_jacobian_adjoint_rows(int64_t batch, int64_t dim, int64_t hidden, const T* m_bar,   \
                                     const T* jac_prev, T* jac_bar_prev, int64_t ld, const T* d1,  \
                                     const T* d2, T* a_bar_prev);

IVAE_BRENIER_ROWS_DECLARE(float)
IVAE_BRENIER_ROWS_DECLARE(double)

#undef IVAE_BRENIER_ROWS_DECLARE

}  // namespace ivae::cpu
