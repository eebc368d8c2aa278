#include "cpu/brenier_rows.h"

#include <limits>
#include <vector>

#include "cpu/cpu_clones.h"
#include "math/brenier.h"
#include "math/cholesky.h"

namespace ivae::cpu {
namespace {

// `omp simd` over h: rows never alias (see expfam_kl_rows.cpp for why restrict alone is not enough).
template <typename T>
IVAE_CLONE_INLINE void jacobian_step(int64_t batch, int64_t dim, int64_t hidden, const T* gemm_out, const T* At_k,
                   const T* d1_k, T* jac, int64_t ld, T* next) {
  for (int64_t b = 0; b < batch; ++b) {
    const T* __restrict__ d1 = d1_k + b * hidden;
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t r = b * dim + j;
      const T* __restrict__ at = At_k + j * hidden;
      const T* __restrict__ g = gemm_out ? gemm_out + r * hidden : nullptr;
      T* __restrict__ out = jac + r * ld;
      T* __restrict__ out_next = next ? next + r * hidden : nullptr;
      if (g && out_next) {
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) {
          const math::JacobianStep<T> s = math::jacobian_step(g[h], at[h], d1[h]);
          out[h] = s.jac;
          out_next[h] = s.next;
        }
      } else {  // first or last layer: no GEMM input, or no next layer
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) {
          const math::JacobianStep<T> s = math::jacobian_step(g ? g[h] : T(0), at[h], d1[h]);
          out[h] = s.jac;
          if (out_next) out_next[h] = s.next;
        }
      }
    }
  }
}

// Hess[i][j] for j <= i: Σ over a sample's K*H columns of (Jᵀ_i c) Jᵀ_j, with Jᵀ_i c staged in
// `scaled` (one row, in cache) so each entry is one vectorised dot product.
template <typename T>
IVAE_CLONE_INLINE void hessian_lower(int64_t dim, int64_t layers, int64_t hidden, const T* jac, const T* c, int64_t layer_stride,
                   T* scaled, T* hess) {
  const int64_t width = layers * hidden;
  for (int64_t i = 0; i < dim; ++i) {
    const T* __restrict__ row_i = jac + i * width;
    T* __restrict__ sc = scaled;
    for (int64_t k = 0; k < layers; ++k) {
      const T* __restrict__ ck = c + k * layer_stride;
#pragma omp simd
      for (int64_t h = 0; h < hidden; ++h) sc[k * hidden + h] = row_i[k * hidden + h] * ck[h];
    }
    int64_t j = 0;
    for (; j + 4 <= i + 1; j += 4) {  // four rows at once: independent accumulators, sc read once
      const T* __restrict__ r0 = jac + j * width;
      const T* __restrict__ r1 = r0 + width;
      const T* __restrict__ r2 = r1 + width;
      const T* __restrict__ r3 = r2 + width;
      T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
      for (int64_t e = 0; e < width; ++e) {
        d0 += sc[e] * r0[e];
        d1 += sc[e] * r1[e];
        d2 += sc[e] * r2[e];
        d3 += sc[e] * r3[e];
      }
      hess[i * dim + j] = d0;
      hess[i * dim + j + 1] = d1;
      hess[i * dim + j + 2] = d2;
      hess[i * dim + j + 3] = d3;
    }
    for (; j <= i; ++j) {
      const T* __restrict__ row_j = jac + j * width;
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t e = 0; e < width; ++e) dot += sc[e] * row_j[e];
      hess[i * dim + j] = dot;
    }
  }
}

template <typename T>
IVAE_CLONE_INLINE void hessian_logdet(int64_t batch, int64_t dim, int64_t layers, int64_t hidden, const T* jac, const T* c,
                    int64_t layer_stride, T alpha, T* logdet, int32_t* info, T* minv) {
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> scaled(layers * hidden), hess(dim * dim);
  for (int64_t b = 0; b < batch; ++b) {
    hessian_lower(dim, layers, hidden, jac + b * dim * layers * hidden, c + b * hidden, layer_stride,
                  scaled.data(), hess.data());
    for (int64_t j = 0; j < dim; ++j) hess[j * dim + j] += alpha;
    const int32_t status = math::cholesky_lower(hess.data(), dim);
    info[b] = status;
    logdet[b] = status == math::kCholeskyOk ? math::cholesky_logdet(hess.data(), dim) : nan;
    if (!minv) continue;
    T* m = minv + b * dim * dim;
    if (status == math::kCholeskyOk) {
      math::cholesky_inverse(hess.data(), m, dim);
    } else {
      for (int64_t i = 0; i < dim * dim; ++i) m[i] = nan;
    }
  }
}

template <typename T>
IVAE_CLONE_INLINE void hessian_adjoint(int64_t batch, int64_t dim, int64_t layers, int64_t hidden, const T* jac, const T* minv,
                     const T* grad_logdet, const T* c, int64_t layer_stride, T* p, T* c_bar) {
  const int64_t width = layers * hidden;
  std::vector<T> row(width);
  for (int64_t b = 0; b < batch; ++b) {
    const T* J = jac + b * dim * width;
    const T* M = minv + b * dim * dim;
    const T omega = grad_logdet[b];
    for (int64_t k = 0; k < layers; ++k) {
      T* __restrict__ cb = c_bar + k * layer_stride + b * hidden;
      for (int64_t h = 0; h < hidden; ++h) cb[h] = 0;
    }
    for (int64_t i = 0; i < dim; ++i) {
      T* __restrict__ pr = row.data();
      for (int64_t e = 0; e < width; ++e) pr[e] = 0;
      for (int64_t j = 0; j < dim; ++j) {  // row i of Hess̄ Jᵀ, Hess̄ = ω̄ M
        const T weight = omega * M[i * dim + j];
        const T* __restrict__ jr = J + j * width;
#pragma omp simd
        for (int64_t e = 0; e < width; ++e) pr[e] += weight * jr[e];
      }
      const T* __restrict__ ji = J + i * width;
      T* __restrict__ out = p + (b * dim + i) * width;
      for (int64_t k = 0; k < layers; ++k) {
        const T* __restrict__ ck = c + k * layer_stride + b * hidden;
        T* __restrict__ cb = c_bar + k * layer_stride + b * hidden;
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) {
          const int64_t e = k * hidden + h;
          const math::HessianAdjoint<T> a = math::hessian_adjoint(ji[e], pr[e], ck[h]);
          cb[h] += a.c_bar_term;
          out[e] = a.jac_bar;
        }
      }
    }
  }
}

template <typename T>
IVAE_CLONE_INLINE void jacobian_adjoint(int64_t batch, int64_t dim, int64_t hidden, const T* m_bar, const T* jac_prev,
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
                                                  const T* gemm_out, const T* At_k, const T* d1_k, \
                                                  T* jac, int64_t ld, T* next) {                   \
    jacobian_step(batch, dim, hidden, gemm_out, At_k, d1_k, jac, ld, next);                        \
  }                                                                                                \
  IVAE_CPU_CLONES void brenier_hessian_logdet_rows(int64_t batch, int64_t dim, int64_t layers,     \
                                                   int64_t hidden, const T* jac, const T* c,       \
                                                   int64_t layer_stride, T alpha, T* logdet,       \
                                                   int32_t* info, T* minv) {                       \
    hessian_logdet(batch, dim, layers, hidden, jac, c, layer_stride, alpha, logdet, info, minv);   \
  }                                                                                                \
  IVAE_CPU_CLONES void brenier_hessian_adjoint_rows(int64_t batch, int64_t dim, int64_t layers,    \
                                                    int64_t hidden, const T* jac, const T* minv,   \
                                                    const T* grad_logdet, const T* c,              \
                                                    int64_t layer_stride, T* p, T* c_bar) {        \
    hessian_adjoint(batch, dim, layers, hidden, jac, minv, grad_logdet, c, layer_stride, p, c_bar); \
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
