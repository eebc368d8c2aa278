// Elementwise steps of the Brenier-map log-determinant (DESIGN.md op 3), one header for the CPU
// loops and the CUDA kernels. Notation, per sample: Jᵀ_k [d, H] is the Jacobian of layer k's
// pre-activations a_k with respect to x, transposed (row j: ∂a_k/∂x_j), and
//   Jᵀ_0 = A_0ᵀ,  Jᵀ_k = (Jᵀ_{k-1} diag σ'(a_{k-1})) W_kᵀ + A_kᵀ     (the GEMM is over B·d rows)
//   Hess = α I + Σ_k J_kᵀ diag(c_k) J_k,  c_k = s_k ⊙ σ''(a_k)       (s_k: ψ's reverse sweep)
//   log det Hess = 2 Σ log diag(chol(Hess)).
// Backward, with M = Hess⁻¹ and Hess̄ = ω̄ M (ω̄: upstream gradient of the log-determinant):
//   P_k = Hess̄ Jᵀ_k,  c̄_k[h] = Σ_j Jᵀ_k[j,h] P_k[j,h],  J̄ᵀ_k = 2 P_k diag(c_k),
//   M̄_{k-1} = J̄ᵀ_k W_k,  J̄ᵀ_{k-1} += M̄_{k-1} diag σ'(a_{k-1}),
//   ā_{k-1} += σ''(a_{k-1}) ⊙ Σ_j M̄_{k-1}[j,:] ⊙ Jᵀ_{k-1}[j,:].
#pragma once

#include "common/host_device.h"
#include "math/softplus.h"

namespace ivae::math {

// One element of layer k's Jacobian step: Jᵀ = gemm_out + A_k[h, j], and the next layer's GEMM
// input, Jᵀ σ'(a_k).
template <typename T>
struct JacobianStep {
  T jac, next;
};

template <typename T>
IVAE_HD JacobianStep<T> jacobian_step(T gemm_out, T A_hj, T d1) {
  const T jac = gemm_out + A_hj;
  return {jac, jac * d1};
}

// Hessian adjoint for one element: the term of c̄ = Σ_j Jᵀ P, and J̄ᵀ = 2 c P.
template <typename T>
struct HessianAdjoint {
  T c_bar_term, jac_bar;
};

template <typename T>
IVAE_HD HessianAdjoint<T> hessian_adjoint(T jac, T p, T c) {
  return {jac * p, T(2) * c * p};
}

// One element of the reverse Jacobian step: the added J̄ᵀ_{k-1} and the term of Σ_j M̄ Jᵀ.
template <typename T>
struct JacobianAdjoint {
  T jac_bar_add, a_bar_term;
};

template <typename T>
IVAE_HD JacobianAdjoint<T> jacobian_adjoint(T m_bar, T jac_prev, T d1_prev) {
  return {m_bar * d1_prev, m_bar * jac_prev};
}

// Reverse step through the Hessian weights c = s ⊙ σ''(a): s̄ = c̄ σ'' and the added ā = c̄ s σ'''.
template <typename T>
struct CurvatureAdjoint {
  T s_bar, a_bar_add;
};

template <typename T>
IVAE_HD CurvatureAdjoint<T> curvature_adjoint(T c_bar, T s, T d1, T d2) {
  const SoftplusParts<T> parts{T(0), d1, d2};  // σ''' needs only σ' and σ''
  return {c_bar * d2, c_bar * s * softplus_d3(parts)};
}

}  // namespace ivae::math
