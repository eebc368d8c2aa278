// Conjugate gradient ∇²ψ u = v per row on the CPU, for one thread's rows, with the ICNN
// Hessian-vector products as register-tiled GEMMs (cpu/tile_gemm.h) whose epilogues apply the
// curvature factors: the solve behind ivae_ext.ops.stochastic_logdet_surrogate (math in
// ivae_ext/ops/logdet_surrogate.py and DESIGN.md op 3). Torch-free.
#pragma once

#include <cstdint>

#include "cpu/icnn_tiled.h"

namespace ivae::cpu {

// For `rows` rows: saved_a, saved_s are icnn_map's saved pre-activations a_k and reverse-sweep
// vectors s_k (layer k's rows at + k * layer_stride, row stride H); v [rows, d] the right-hand
// sides. Writes u [rows, d] (the iterate), residual [rows, d] (v - H u as the recurrence keeps
// it), iterations [rows]: the count at which every entry of the row's residual fell below tol,
// max_iter if it never did, -1 if the solve met pᵀHp <= 0 (not positive definite), -2 if it met
// NaN (not finite); u and residual NaN for both. Starts at u = 0.
void icnn_cg_tiled(const IcnnPacked<float>& p, int64_t rows, const float* saved_a, const float* saved_s,
                   int64_t layer_stride, const float* v, float tol, int64_t max_iter, float* u, float* residual,
                   int32_t* iterations);
void icnn_cg_tiled(const IcnnPacked<double>& p, int64_t rows, const double* saved_a, const double* saved_s,
                   int64_t layer_stride, const double* v, double tol, int64_t max_iter, double* u,
                   double* residual, int32_t* iterations);

}  // namespace ivae::cpu
