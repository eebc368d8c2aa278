#include "cpu/brenier_rows.h"

#include <limits>

#include "cpu/cpu_clones.h"
#include "math/brenier.h"
#include "math/cholesky.h"

namespace ivae::cpu {
namespace {

// `omp simd` over h: rows never alias (see expfam_kl_rows.cpp for why restrict alone is not enough).
template <typename T>
void jacobian_step(int64_t batch, int64_t dim, int64_t hidden, const T* gemm_out, const T* At_k,
                   const T* c_k, const T* d1_k, T* jac, T* jac_c, int64_t ld, T* next) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* __restrict__ c = c_k + b * hidden;
    const T* __restrict__ d1 = d1_k + b * hidden;
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t r = b * dim + j;
      const T* __restrict__ at = At_k + j * hidden;
      const T* __restrict__ g = gemm_out ? gemm_out + r * hidden : nullptr;
      T* __restrict__ out = jac + r * ld;
      T* __restrict__ out_c = jac_c + r * ld;
      T* __restrict__ out_next = next ? next + r * hidden : nullptr;
      if (g && out_next) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) {
          const math::JacobianStep<T> s = math::jacobian_step(g[h], at[h], c[h], d1[h]);
          out[h] = s.jac;
          out_c[h] = s.jac_c;
          out_next[h] = s.next;
        }
      } else {  // first or last layer: no GEMM input, or no next layer
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) {
          const math::JacobianStep<T> s = math::jacobian_step(g ? g[h] : T(0), at[h], c[h], d1[h]);
          out[h] = s.jac;
          out_c[h] = s.jac_c;
          if (out_next) out_next[h] = s.next;
        }
      }
    }
  }
}

template <typename T>
void hessian_logdet(int64_t batch, int64_t dim, T* hess, T alpha, T* logdet, int32_t* info, T* minv) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t b = 0; b < batch; ++b) {
    T* h = hess + b * dim * dim;
    for (int64_t j = 0; j < dim; ++j) h[j * dim + j] += alpha;
    const int32_t status = math::cholesky_lower(h, dim);
    info[b] = status;
    logdet[b] = status == math::kCholeskyOk ? math::cholesky_logdet(h, dim) : nan;
    if (!minv) continue;
    T* m = minv + b * dim * dim;
    if (status == math::kCholeskyOk) {
      math::cholesky_inverse(h, m, dim);
    } else {
      for (int64_t i = 0; i < dim * dim; ++i) m[i] = nan;
    }
  }
}

template <typename T>
void hessian_adjoint(int64_t batch, int64_t dim, int64_t hidden, const T* jac, T* p, int64_t ld,
                     const T* c_k, T* c_bar_k) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* __restrict__ c = c_k + b * hidden;
    T* __restrict__ c_bar = c_bar_k + b * hidden;
    for (int64_t h = 0; h < hidden; ++h) c_bar[h] = 0;
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t r = b * dim + j;
      const T* __restrict__ jr = jac + r * ld;
      T* __restrict__ pr = p + r * ld;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) {
        const math::HessianAdjoint<T> a = math::hessian_adjoint(jr[h], pr[h], c[h]);
        c_bar[h] += a.c_bar_term;
        pr[h] = a.jac_bar;
      }
    }
  }
}

template <typename T>
void jacobian_adjoint(int64_t batch, int64_t dim, int64_t hidden, const T* m_bar, const T* jac_prev,
                      T* jac_bar_prev, int64_t ld, const T* d1_prev, const T* d2_prev, T* a_bar_prev) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* __restrict__ d1 = d1_prev + b * hidden;
    const T* __restrict__ d2 = d2_prev + b * hidden;
    T* __restrict__ a_bar = a_bar_prev + b * hidden;
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t r = b * dim + j;
      const T* __restrict__ mb = m_bar + r * hidden;
      const T* __restrict__ jp = jac_prev + r * ld;
      T* __restrict__ jb = jac_bar_prev + r * ld;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) {
        const math::JacobianAdjoint<T> a = math::jacobian_adjoint(mb[h], jp[h], d1[h]);
        jb[h] += a.jac_bar_add;
        a_bar[h] += d2[h] * a.a_bar_term;
      }
    }
  }
}

}  // namespace

#define IVAE_BRENIER_ROWS_FOR(T)                                                                    \
  IVAE_CPU_CLONES void brenier_jacobian_step_rows(int64_t batch, int64_t dim, int64_t hidden,      \
                                                  const T* gemm_out, const T* At_k, const T* c_k,  \
                                                  const T* d1_k, T* jac, T* jac_c, int64_t ld,     \
                                                  T* next) {                                       \
    jacobian_step(batch, dim, hidden, gemm_out, At_k, c_k, d1_k, jac, jac_c, ld, next);           \
  }                                                                                                \
  IVAE_CPU_CLONES void brenier_hessian_logdet_rows(int64_t batch, int64_t dim, T* hess, T alpha,   \
                                                   T* logdet, int32_t* info, T* minv) {            \
    hessian_logdet(batch, dim, hess, alpha, logdet, info, minv);                                   \
  }                                                                                                \
  IVAE_CPU_CLONES void brenier_hessian_adjoint_rows(int64_t batch, int64_t dim, int64_t hidden,    \
                                                    const T* jac, T* p, int64_t ld, const T* c_k,  \
                                                    T* c_bar_k) {                                  \
    hessian_adjoint(batch, dim, hidden, jac, p, ld, c_k, c_bar_k);                                 \
  }                                                                                                \
  IVAE_CPU_CLONES void brenier_jacobian_adjoint_rows(int64_t batch, int64_t dim, int64_t hidden,   \
                                                     const T* m_bar, const T* jac_prev,            \
                                                     T* jac_bar_prev, int64_t ld, const T* d1,     \
                                                     const T* d2, T* a_bar_prev) {                 \
    jacobian_adjoint(batch, dim, hidden, m_bar, jac_prev, jac_bar_prev, ld, d1, d2, a_bar_prev);   \
  }

IVAE_BRENIER_ROWS_FOR(float)
IVAE_BRENIER_ROWS_FOR(double)

#undef IVAE_BRENIER_ROWS_FOR

}  // namespace ivae::cpu
