// Torch-free CPU loops for the Brenier log-determinant's fused steps (math: math/brenier.h and
// math/cholesky.h). A sample's Jacobian is d rows of K*H values (`ld` apart in a layer block);
// [K, B, H] arrays have layer stride `layer_stride`; [B, d, d] arrays are contiguous. Compiled per
// x86-64 level like icnn_rows.
#pragma once

#include <cstdint>

namespace ivae::cpu {

#define IVAE_BRENIER_ROWS_DECLARE(T)                                                                \
  /* jac = gemm_out + A_kᵀ (gemm_out null: 0); next = jac σ'(a_k) (if not null). */                \
  void brenier_jacobian_step_rows(int64_t batch, int64_t dim, int64_t hidden, const T* gemm_out,    \
                                  const T* At_k, const T* d1_k, T* jac, int64_t ld, T* next);       \
  /* Per sample: Hess = Σ_k Jᵀ_k diag(c_k) J_k + αI (lower triangle), Cholesky, logdet, info and,   \
     if minv is not null, minv = Hess⁻¹. jac contiguous [batch, dim, layers*hidden]. */             \
  void brenier_hessian_logdet_rows(int64_t batch, int64_t dim, int64_t layers, int64_t hidden,      \
                                   const T* jac, const T* c, int64_t layer_stride, T alpha,         \
                                   T* logdet, int32_t* info, T* minv);                              \
  /* The low-rank form (ops/brenier_logdet.h), K*H < dim, alpha > 0, c >= 0: per sample          \
     Cap = αI + C½ J Jᵀ C½ (K*H x K*H), Cholesky, logdet = log det Cap + (dim − K*H) log α, info    \
     and, if minv is not null, Cap⁻¹ into each sample's [dim, dim] block (row stride dim). */       \
  void brenier_low_rank_logdet_rows(int64_t batch, int64_t dim, int64_t layers, int64_t hidden,     \
                                    const T* jac, const T* c, int64_t layer_stride, T alpha,        \
                                    T* logdet, int32_t* info, T* minv);                             \
  /* Per sample: P = ω̄ minv Jᵀ; c_bar = Σ_j Jᵀ ⊙ P; p = 2 P diag(c). */                              \
  void brenier_hessian_adjoint_rows(int64_t batch, int64_t dim, int64_t layers, int64_t hidden,     \
                                    const T* jac, const T* minv, const T* grad_logdet, const T* c,  \
                                    int64_t layer_stride, T* p, T* c_bar);                          \
  /* Over n elements: s_bar = c_bar σ''; a_bar += c_bar s σ'''. */                               \
  void brenier_curvature_adjoint_rows(int64_t n, const T* c_bar, const T* s, const T* d1, const T* d2, \
                                      T* s_bar, T* a_bar);                                          \
  /* jac_bar_prev += m_bar σ'; a_bar_prev += σ'' Σ_j m_bar jac_prev. */                             \
  void brenier_jacobian_adjoint_rows(int64_t batch, int64_t dim, int64_t hidden, const T* m_bar,    \
                                     const T* jac_prev, T* jac_bar_prev, int64_t ld, const T* d1,   \
                                     const T* d2, T* a_bar_prev);

IVAE_BRENIER_ROWS_DECLARE(float)
IVAE_BRENIER_ROWS_DECLARE(double)

#undef IVAE_BRENIER_ROWS_DECLARE

}  // namespace ivae::cpu
