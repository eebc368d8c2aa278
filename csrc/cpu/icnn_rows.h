// Torch-free CPU loops for the ICNN map's fused elementwise steps (math: math/icnn.h).
// Row-major [rows, H] blocks; `*_ld` is a row stride (0: one row shared by all rows).
// Each entry point is compiled per x86-64 level and picked at load time, like expfam_kl_rows.
#pragma once

#include <cstdint>

namespace ivae::cpu {

// a = t + bias, z = σ(a), d1 = σ'(a); a, z, d1 contiguous [rows, H].
void icnn_layer_forward_rows(int64_t rows, int64_t hidden, const float* t, int64_t t_ld,
                             const float* bias, float* a, float* z, float* d1);
void icnn_layer_forward_rows(int64_t rows, int64_t hidden, const double* t, int64_t t_ld,
                             const double* bias, double* a, double* z, double* d1);

// psi[r] = z_r · w + ½ alpha ‖x_r‖²; g_r = w ⊙ d1_r (g rows of stride g_ld).
void icnn_top_forward_rows(int64_t rows, int64_t hidden, int64_t dim, const float* z,
                           const float* d1, const float* w, const float* x, float alpha,
                           float* psi, float* g, int64_t g_ld);
void icnn_top_forward_rows(int64_t rows, int64_t hidden, int64_t dim, const double* z,
                           const double* d1, const double* w, const double* x, double alpha,
                           double* psi, double* g, int64_t g_ld);

// z, d1, d2 = σ, σ', σ'' of n pre-activations.
void icnn_softplus_all(int64_t n, const float* a, float* z, float* d1, float* d2);
void icnn_softplus_all(int64_t n, const double* a, double* z, double* d1, double* d2);

// ǡ = ż̄ σ', ā = ż̄ ȧ σ'' + z̄ σ' (math::icnn_layer_adjoint); d1, d2 contiguous.
void icnn_layer_adjoint_rows(int64_t rows, int64_t hidden, const float* zdot_bar, int64_t zdot_bar_ld,
                             const float* z_bar, int64_t z_bar_ld, const float* adot, int64_t adot_ld,
                             const float* d1, const float* d2, float* adot_bar,
                             int64_t adot_bar_ld, float* a_bar, int64_t a_bar_ld);
void icnn_layer_adjoint_rows(int64_t rows, int64_t hidden, const double* zdot_bar, int64_t zdot_bar_ld,
                             const double* z_bar, int64_t z_bar_ld, const double* adot, int64_t adot_ld,
                             const double* d1, const double* d2, double* adot_bar,
                             int64_t adot_bar_ld, double* a_bar, int64_t a_bar_ld);

}  // namespace ivae::cpu
