#include "cpu/brenier_rows.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/cholesky_lanes.h"
#include "cpu/cpu_clones.h"
#include "cpu/tile_gemm.h"
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

// (Jᵀ_i ⊙ c) into `scaled`: row i of the sample's Jacobian times the layer's c, for each layer.
template <typename T>
IVAE_CLONE_INLINE void scale_row(int64_t layers, int64_t hidden, const T* row, const T* c, int64_t layer_stride,
                                 T* scaled) {
  for (int64_t k = 0; k < layers; ++k) {
    const T* __restrict__ ck = c + k * layer_stride;
    const T* __restrict__ rk = row + k * hidden;
    T* __restrict__ sk = scaled + k * hidden;
#pragma omp simd
    for (int64_t h = 0; h < hidden; ++h) sk[h] = rk[h] * ck[h];
  }
}

// Hess[i][j] for j <= i: Σ over a sample's K*H columns of (Jᵀ_i c) Jᵀ_j, by 4 x 4 blocks of dot
// products: rows i..i+3 are staged scaled (in cache), and each loaded element feeds four
// multiply-adds. Blocks reaching past the triangle or the matrix (rows clamped to the last one)
// compute a few products that are dropped. The dot products run on 256-bit vectors (simdlen):
// with sixteen per block, their final horizontal sums cost more than the loop at 512 bits, and
// 256-bit multiply-adds have the same throughput on the machines measured (AMD Zen 4).
template <typename T>
IVAE_CLONE_INLINE void hessian_lower(int64_t dim, int64_t layers, int64_t hidden, const T* jac, const T* c,
                                     int64_t layer_stride, T* scaled, T* hess) {
  const int64_t width = layers * hidden;
  const auto row_of = [&](const T* base, int64_t r) { return base + std::min(r, dim - 1) * width; };
  for (int64_t i = 0; i < dim; i += 4) {
    for (int64_t q = 0; q < 4; ++q) scale_row(layers, hidden, row_of(jac, i + q), c, layer_stride, scaled + q * width);
    const T* __restrict__ s0 = scaled;
    const T* __restrict__ s1 = scaled + width;
    const T* __restrict__ s2 = scaled + 2 * width;
    const T* __restrict__ s3 = scaled + 3 * width;
    for (int64_t j = 0; j <= std::min(i + 3, dim - 1); j += 4) {
      const T* __restrict__ r0 = row_of(jac, j);
      const T* __restrict__ r1 = row_of(jac, j + 1);
      const T* __restrict__ r2 = row_of(jac, j + 2);
      const T* __restrict__ r3 = row_of(jac, j + 3);
      T a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
      T a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
#pragma omp simd simdlen(32 / sizeof(T)) \
    reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33)
      for (int64_t e = 0; e < width; ++e) {
        const T x0 = r0[e], x1 = r1[e], x2 = r2[e], x3 = r3[e];
        const T y0 = s0[e], y1 = s1[e], y2 = s2[e], y3 = s3[e];
        a00 += y0 * x0, a01 += y0 * x1, a02 += y0 * x2, a03 += y0 * x3;
        a10 += y1 * x0, a11 += y1 * x1, a12 += y1 * x2, a13 += y1 * x3;
        a20 += y2 * x0, a21 += y2 * x1, a22 += y2 * x2, a23 += y2 * x3;
        a30 += y3 * x0, a31 += y3 * x1, a32 += y3 * x2, a33 += y3 * x3;
      }
      const T block[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
      for (int64_t p = 0; p < 4 && i + p < dim; ++p) {
        for (int64_t q = 0; q < 4 && j + q <= i + p; ++q) hess[(i + p) * dim + j + q] = block[p][q];
      }
    }
  }
}

// Per group of kLanes samples: each sample's n x n lower triangle from build(sample, out), then
// the shift by αI, factorisation, logdet (+ offset) and inverse for the whole group at once, one
// sample per SIMD lane (cpu/cholesky_lanes.h); a short last group is filled with identity
// matrices. The inverse goes to minv + sample * minv_stride, rows minv_ld apart.
template <typename T, typename Build>
IVAE_CLONE_INLINE void shifted_logdet_in_lanes(int64_t batch, int64_t n, T alpha, T offset, const Build& build,
                                               T* logdet, int32_t* info, T* minv, int64_t minv_stride,
                                               int64_t minv_ld) {
  constexpr int L = kLanes<T>;
  const int64_t nn = n * n;
  std::vector<T> lower(nn), lanes(nn * L), scratch(minv ? nn * L : 0), inv(minv ? nn * L : 0);
  int32_t status[L];
  T lane_logdet[L];
  for (int64_t g = 0; g < batch; g += L) {
    const int64_t m = std::min<int64_t>(L, batch - g);
    for (int64_t l = 0; l < L; ++l) {
      if (l < m) build(g + l, lower.data());
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j <= i; ++j) lanes[(i * n + j) * L + l] = l < m ? lower[i * n + j] : T(i == j);
      }
    }
    shifted_logdet_and_inverse_lanes<T, L>(lanes.data(), n, alpha, status, lane_logdet,
                                           minv ? scratch.data() : nullptr, minv ? inv.data() : nullptr);
    for (int64_t l = 0; l < m; ++l) {
      info[g + l] = status[l];
      logdet[g + l] = lane_logdet[l] + offset;
      if (!minv) continue;
      T* out = minv + (g + l) * minv_stride;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) out[i * minv_ld + j] = inv[(i * n + j) * L + l];
      }
    }
  }
}

// The d x d form: each sample's Hessian products (hessian_lower), then shifted_logdet_in_lanes.
template <typename T>
IVAE_CLONE_INLINE void hessian_logdet(int64_t batch, int64_t dim, int64_t layers, int64_t hidden, const T* jac,
                                      const T* c, int64_t layer_stride, T alpha, T* logdet, int32_t* info, T* minv) {
  std::vector<T> scaled(4 * layers * hidden);
  const auto build = [&](int64_t b, T* hess) __attribute__((always_inline)) {  // inlined: the clone's ISA
    hessian_lower(dim, layers, hidden, jac + b * dim * layers * hidden, c + b * hidden, layer_stride, scaled.data(),
                  hess);
  };
  shifted_logdet_in_lanes(batch, dim, alpha, T(0), build, logdet, info, minv, dim * dim, dim);
}

// The low-rank form: each sample's Jᵀ C½ transposed into r = K*H rows of d values and their
// products (hessian_lower with unit weights), Cap − αI = C½ J Jᵀ C½; log det Hess = log det Cap +
// (d − r) log α, and Cap⁻¹ into the top-left of each sample's d x d minv block.
template <typename T>
IVAE_CLONE_INLINE void low_rank_logdet(int64_t batch, int64_t dim, int64_t layers, int64_t hidden, const T* jac,
                                       const T* c, int64_t layer_stride, T alpha, T* logdet, int32_t* info, T* minv) {
  const int64_t r = layers * hidden;
  std::vector<T> rows(r * dim), ones(dim, T(1)), scaled(4 * dim), root(r);
  const auto build = [&](int64_t b, T* cap) __attribute__((always_inline)) {
    const T* J = jac + b * dim * r;
    for (int64_t k = 0; k < layers; ++k) {
      for (int64_t h = 0; h < hidden; ++h) root[k * hidden + h] = std::sqrt(c[k * layer_stride + b * hidden + h]);
    }
    for (int64_t e = 0; e < r; ++e) {
      for (int64_t j = 0; j < dim; ++j) rows[e * dim + j] = J[j * r + e] * root[e];
    }
    hessian_lower(r, 1, dim, rows.data(), ones.data(), 0, scaled.data(), cap);
  };
  shifted_logdet_in_lanes(batch, r, alpha, static_cast<T>(dim - r) * std::log(alpha), build, logdet, info, minv,
                          dim * dim, dim);
}

// P = Hess̄ Jᵀ for one sample, Hess̄ = ω̄ M: four rows of P by kCols columns at a time, accumulated
// over the d rows of Jᵀ in registers (each loaded Jᵀ element feeds four multiply-adds). kCols: 128
// bytes of a row with AVX-512's 32 registers, 64 bytes otherwise (as tile::gemm, cpu/tile_gemm.h:
// wider tiles spill their accumulators with 16 registers).
template <typename T, int64_t kCols>
IVAE_CLONE_INLINE void hessian_bar_times_jac_tiles(int64_t dim, int64_t width, const T* J, const T* h_bar, T* P) {
  constexpr int64_t kRows = 4;
  for (int64_t i0 = 0; i0 < dim; i0 += kRows) {
    for (int64_t e0 = 0; e0 < width; e0 += kCols) {
      if (i0 + kRows <= dim && e0 + kCols <= width) {
        T acc0[kCols] = {}, acc1[kCols] = {}, acc2[kCols] = {}, acc3[kCols] = {};
        for (int64_t j = 0; j < dim; ++j) {
          const T* __restrict__ jr = J + j * width + e0;
          const T h0 = h_bar[i0 * dim + j], h1 = h_bar[(i0 + 1) * dim + j];
          const T h2 = h_bar[(i0 + 2) * dim + j], h3 = h_bar[(i0 + 3) * dim + j];
#pragma omp simd
          for (int64_t e = 0; e < kCols; ++e) {
            acc0[e] += h0 * jr[e];
            acc1[e] += h1 * jr[e];
            acc2[e] += h2 * jr[e];
            acc3[e] += h3 * jr[e];
          }
        }
        T* out = P + i0 * width + e0;
        for (int64_t e = 0; e < kCols; ++e) {
          out[e] = acc0[e];
          out[width + e] = acc1[e];
          out[2 * width + e] = acc2[e];
          out[3 * width + e] = acc3[e];
        }
      } else {  // edge tiles
        for (int64_t i = i0; i < std::min(i0 + kRows, dim); ++i) {
          for (int64_t e = e0; e < std::min(e0 + kCols, width); ++e) {
            T sum = 0;
            for (int64_t j = 0; j < dim; ++j) sum += h_bar[i * dim + j] * J[j * width + e];
            P[i * width + e] = sum;
          }
        }
      }
    }
  }
}

template <typename T>
IVAE_CLONE_INLINE void hessian_bar_times_jac(int64_t dim, int64_t width, const T* J, const T* h_bar, T* P) {
  if (tile::wide_vector_registers()) {
    hessian_bar_times_jac_tiles<T, 128 / sizeof(T)>(dim, width, J, h_bar, P);
  } else {
    hessian_bar_times_jac_tiles<T, 64 / sizeof(T)>(dim, width, J, h_bar, P);
  }
}

template <typename T>
IVAE_CLONE_INLINE void hessian_adjoint(int64_t batch, int64_t dim, int64_t layers, int64_t hidden, const T* jac,
                                       const T* minv, const T* grad_logdet, const T* c, int64_t layer_stride, T* p,
                                       T* c_bar) {
  const int64_t width = layers * hidden;
  std::vector<T> h_bar(dim * dim);
  for (int64_t b = 0; b < batch; ++b) {
    const T* J = jac + b * dim * width;
    const T* M = minv + b * dim * dim;
    T* P = p + b * dim * width;
    for (int64_t e = 0; e < dim * dim; ++e) h_bar[e] = grad_logdet[b] * M[e];
    hessian_bar_times_jac(dim, width, J, h_bar.data(), P);
    for (int64_t k = 0; k < layers; ++k) {
      T* __restrict__ cb = c_bar + k * layer_stride + b * hidden;
      for (int64_t h = 0; h < hidden; ++h) cb[h] = 0;
    }
    for (int64_t i = 0; i < dim; ++i) {  // c̄ = Σ_i Jᵀ ⊙ P, then P ← 2 P diag(c)
      const T* __restrict__ ji = J + i * width;
      T* __restrict__ pi = P + i * width;
      for (int64_t k = 0; k < layers; ++k) {
        const T* __restrict__ ck = c + k * layer_stride + b * hidden;
        T* __restrict__ cb = c_bar + k * layer_stride + b * hidden;
#pragma omp simd
        for (int64_t h = 0; h < hidden; ++h) {
          const int64_t e = k * hidden + h;
          const math::HessianAdjoint<T> a = math::hessian_adjoint(ji[e], pi[e], ck[h]);
          cb[h] += a.c_bar_term;
          pi[e] = a.jac_bar;
        }
      }
    }
  }
}

template <typename T>
IVAE_CLONE_INLINE void curvature_adjoint(int64_t n, const T* __restrict__ c_bar, const T* __restrict__ s,
                                         const T* __restrict__ d1, const T* __restrict__ d2, T* __restrict__ s_bar,
                                         T* __restrict__ a_bar) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) {
    const math::CurvatureAdjoint<T> r = math::curvature_adjoint(c_bar[e], s[e], d1[e], d2[e]);
    s_bar[e] = r.s_bar;
    a_bar[e] += r.a_bar_add;
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
  IVAE_CPU_CLONES void brenier_low_rank_logdet_rows(int64_t batch, int64_t dim, int64_t layers,    \
                                                    int64_t hidden, const T* jac, const T* c,      \
                                                    int64_t layer_stride, T alpha, T* logdet,      \
                                                    int32_t* info, T* minv) {                      \
    low_rank_logdet(batch, dim, layers, hidden, jac, c, layer_stride, alpha, logdet, info, minv);  \
  }                                                                                                \
  IVAE_CPU_CLONES void brenier_hessian_adjoint_rows(int64_t batch, int64_t dim, int64_t layers,    \
                                                    int64_t hidden, const T* jac, const T* minv,   \
                                                    const T* grad_logdet, const T* c,              \
                                                    int64_t layer_stride, T* p, T* c_bar) {        \
    hessian_adjoint(batch, dim, layers, hidden, jac, minv, grad_logdet, c, layer_stride, p, c_bar); \
  }                                                                                                \
  IVAE_CPU_CLONES void brenier_curvature_adjoint_rows(int64_t n, const T* c_bar, const T* s,        \
                                                      const T* d1, const T* d2, T* s_bar, T* a_bar) { \
    curvature_adjoint(n, c_bar, s, d1, d2, s_bar, a_bar);                                          \
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
