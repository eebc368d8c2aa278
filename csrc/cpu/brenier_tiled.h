// The Brenier log-determinant's forward on the CPU for one thread's rows: the map's tiled pass
// (cpu/icnn_tiled.h), the Jacobian recurrence Jᵀ_k = (Jᵀ_{k-1} diag σ'(a_{k-1})) W_kᵀ + A_kᵀ as
// register tiles whose epilogue adds A_kᵀ and applies the next layer's σ', and the per-sample
// Hessian, Cholesky and logdet (cpu/brenier_rows.h). Torch-free; math in math/brenier.h.
#pragma once

#include <cstdint>

#include "cpu/icnn_tiled.h"

namespace ivae::cpu {

// As icnn_tiled_forward, plus logdet [rows] and info [rows]; jac [rows, d, K*H] and minv
// [rows, d, d] are written when not null (kept for the backward), else jac goes to a workspace.
// low_rank: the low-rank form (ops/brenier_logdet.h), minv's top-left K*H x K*H block written.
void brenier_tiled_logdet(const IcnnPacked<float>& p, int64_t rows, const float* x, float* psi, float* grad,
                          float* saved_a, float* saved_s, int64_t layer_stride, float* logdet, int32_t* info,
                          float* jac, float* minv, bool low_rank);
void brenier_tiled_logdet(const IcnnPacked<double>& p, int64_t rows, const double* x, double* psi, double* grad,
                          double* saved_a, double* saved_s, int64_t layer_stride, double* logdet, int32_t* info,
                          double* jac, double* minv, bool low_rank);

// The log-determinant's backward (d x d form) for `rows` rows from ω̄ = grad_logdet [rows], the
// forward's saved a_k, s_k (layer k's rows at saved_a + k * layer_stride), jac [rows, d, K*H] and
// minv [rows, d, d]: x̄ [rows, d] (if mask[0]; else x_bar may be null) and the parameter
// gradients mask[1..5] says, added into `partial`.
void brenier_tiled_logdet_backward(const IcnnPacked<float>& p, int64_t rows, const float* x, const float* grad_logdet,
                                   const float* saved_a, const float* saved_s, int64_t layer_stride, const float* jac,
                                   const float* minv, std::array<bool, 6> mask, float* x_bar,
                                   IcnnPartial<float>& partial);
void brenier_tiled_logdet_backward(const IcnnPacked<double>& p, int64_t rows, const double* x,
                                   const double* grad_logdet, const double* saved_a, const double* saved_s,
                                   int64_t layer_stride, const double* jac, const double* minv,
                                   std::array<bool, 6> mask, double* x_bar, IcnnPartial<double>& partial);

}  // namespace ivae::cpu
