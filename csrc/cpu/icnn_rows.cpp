#include "cpu/icnn_rows.h"

#include "common/host_device.h"
#include "cpu/cpu_clones.h"
#include "math/icnn.h"

namespace ivae::cpu {
namespace {

// `omp simd`: the rows never alias (see expfam_kl_rows.cpp for why restrict alone is not enough).
template <typename T>
IVAE_HD void layer_forward_row(int64_t hidden, const T* __restrict__ t, const T* __restrict__ bias,
                               T* __restrict__ a, T* __restrict__ z, T* __restrict__ d1) {
#pragma omp simd
  for (int64_t h = 0; h < hidden; ++h) {
    const math::IcnnLayerForward<T> f = math::icnn_layer_forward(t[h], bias[h]);
    a[h] = f.a;
    z[h] = f.z;
    d1[h] = f.d1;
  }
}

template <typename T>
IVAE_HD void layer_forward(int64_t rows, int64_t hidden, const T* t, int64_t t_ld, const T* bias,
                           T* a, T* z, T* d1) {
  for (int64_t r = 0; r < rows; ++r) {
    layer_forward_row(hidden, t + r * t_ld, bias, a + r * hidden, z + r * hidden, d1 + r * hidden);
  }
}

template <typename T>
IVAE_HD T top_forward_row(int64_t hidden, int64_t dim, const T* __restrict__ z, const T* __restrict__ d1,
                          const T* __restrict__ w, const T* __restrict__ x, T alpha, T* __restrict__ g) {
  T potential = 0;
#pragma omp simd reduction(+ : potential)
  for (int64_t h = 0; h < hidden; ++h) {
    potential += z[h] * w[h];
    g[h] = w[h] * d1[h];
  }
  T square = 0;
#pragma omp simd reduction(+ : square)
  for (int64_t j = 0; j < dim; ++j) square += x[j] * x[j];
  return potential + (alpha == T(0) ? T(0) : T(0.5) * alpha * square);  // α = 0: no 0·inf when ‖x‖² overflows
}

template <typename T>
IVAE_HD void top_forward(int64_t rows, int64_t hidden, int64_t dim, const T* z, const T* d1,
                         const T* w, const T* x, T alpha, T* psi, T* g, int64_t g_ld) {
  for (int64_t r = 0; r < rows; ++r) {
    psi[r] = top_forward_row(hidden, dim, z + r * hidden, d1 + r * hidden, w, x + r * dim, alpha,
                             g + r * g_ld);
  }
}

template <typename T>
IVAE_HD void softplus_all(int64_t n, const T* __restrict__ a, T* __restrict__ z, T* __restrict__ d1,
                          T* __restrict__ d2) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const math::SoftplusParts<T> s = math::softplus_parts(a[i]);
    z[i] = s.value;
    d1[i] = s.d1;
    d2[i] = s.d2;
  }
}

template <typename T>
IVAE_HD void layer_adjoint_row(int64_t hidden, const T* __restrict__ zdot_bar, const T* __restrict__ z_bar,
                               const T* __restrict__ adot, const T* __restrict__ d1,
                               const T* __restrict__ d2, T* __restrict__ adot_bar, T* __restrict__ a_bar) {
#pragma omp simd
  for (int64_t h = 0; h < hidden; ++h) {
    const math::IcnnLayerAdjoint<T> j = math::icnn_layer_adjoint(zdot_bar[h], z_bar[h], adot[h], d1[h], d2[h]);
    adot_bar[h] = j.adot_bar;
    a_bar[h] = j.a_bar;
  }
}

template <typename T>
IVAE_HD void layer_adjoint(int64_t rows, int64_t hidden, const T* zdot_bar, int64_t zdot_bar_ld,
                           const T* z_bar, int64_t z_bar_ld, const T* adot, int64_t adot_ld, const T* d1,
                           const T* d2, T* adot_bar, int64_t adot_bar_ld, T* a_bar, int64_t a_bar_ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t e = r * hidden;
    layer_adjoint_row(hidden, zdot_bar + r * zdot_bar_ld, z_bar + r * z_bar_ld, adot + r * adot_ld, d1 + e,
                      d2 + e, adot_bar + r * adot_bar_ld, a_bar + r * a_bar_ld);
  }
}

}  // namespace

#define IVAE_ICNN_ROWS_FOR(T)                                                                      \
  IVAE_CPU_CLONES void icnn_layer_forward_rows(int64_t rows, int64_t hidden, const T* t,         \
                                               int64_t t_ld, const T* bias, T* a, T* z, T* d1) { \
    layer_forward(rows, hidden, t, t_ld, bias, a, z, d1);                                        \
  }                                                                                              \
  IVAE_CPU_CLONES void icnn_top_forward_rows(int64_t rows, int64_t hidden, int64_t dim,          \
                                             const T* z, const T* d1, const T* w, const T* x,    \
                                             T alpha, T* psi, T* g, int64_t g_ld) {              \
    top_forward(rows, hidden, dim, z, d1, w, x, alpha, psi, g, g_ld);                            \
  }                                                                                              \
  IVAE_CPU_CLONES void icnn_softplus_all(int64_t n, const T* a, T* z, T* d1, T* d2) {           \
    softplus_all(n, a, z, d1, d2);                                                               \
  }                                                                                              \
  IVAE_CPU_CLONES void icnn_layer_adjoint_rows(                                                  \
      int64_t rows, int64_t hidden, const T* zdot_bar, int64_t zdot_bar_ld, const T* z_bar,      \
      int64_t z_bar_ld, const T* adot, int64_t adot_ld, const T* d1, const T* d2, T* adot_bar,   \
      int64_t adot_bar_ld, T* a_bar, int64_t a_bar_ld) {                                         \
    layer_adjoint(rows, hidden, zdot_bar, zdot_bar_ld, z_bar, z_bar_ld, adot, adot_ld, d1, d2,   \
                  adot_bar, adot_bar_ld, a_bar, a_bar_ld);                                       \
  }

IVAE_ICNN_ROWS_FOR(float)
IVAE_ICNN_ROWS_FOR(double)

#undef IVAE_ICNN_ROWS_FOR

}  // namespace ivae::cpu
