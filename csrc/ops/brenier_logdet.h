// The exact log-determinant of a Brenier map's Jacobian (the ICNN Hessian) and its analytic
// backward, as GEMMs (ATen: BLAS / cuBLAS) around fused per-device steps. Math: DESIGN.md op 3
// and math/brenier.h; the forward pass and ψ's reverse sweep are icnn_map's (ops/icnn_map.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "common/icnn_args.h"
#include "ops/icnn_map.h"

namespace ivae::logdet {

// A device's fused steps. Jacobian blocks are [B, d, H] with rows (b, j) spaced `K*H` apart
// (layer k's column block of a [B, d, K*H] buffer); [B, H] tensors are contiguous.
struct Kernels {
  // jac = gemm_out + A_kᵀ (gemm_out undefined: 0) and next = jac ⊙ σ'(a_k) (skipped if
  // undefined). gemm_out and next contiguous [B, d, H]; At_k = A_kᵀ contiguous [d, H].
  void (*jacobian_step)(const at::Tensor& gemm_out, const at::Tensor& At_k, const at::Tensor& d1_k,
                        const at::Tensor& jac, const at::Tensor& next);
  // Per sample: Hess = Σ_k Jᵀ_k diag(c_k) J_k + αI, its Cholesky factor, logdet, info
  // (math/cholesky.h statuses) and, if minv is defined, minv = Hess⁻¹. jac contiguous
  // [B, d, K*H]; c contiguous [K, B, H]; minv contiguous [B, d, d].
  void (*hessian_logdet)(const at::Tensor& jac, const at::Tensor& c, const at::Tensor& alpha,
                         const at::Tensor& logdet, const at::Tensor& info, const at::Tensor& minv);
  // With Hess̄ = grad_logdet · minv per sample: p = Hess̄ Jᵀ then, per layer, c̄_k = Σ_j Jᵀ_k ⊙ p_k
  // (over each sample's d rows) and p_k ← 2 p_k diag(c_k): p ends as J̄ᵀ [B, d, K*H]; c, c_bar
  // contiguous [K, B, H].
  void (*hessian_adjoint)(const at::Tensor& jac, const at::Tensor& minv, const at::Tensor& grad_logdet,
                          const at::Tensor& c, const at::Tensor& p, const at::Tensor& c_bar);
  // Through c = s ⊙ σ''(a): s_bar = c_bar ⊙ σ'', a_bar += c_bar ⊙ s ⊙ σ'''. All [K, B, H]; s may
  // have a larger layer stride, the others are contiguous.
  void (*curvature_adjoint)(const at::Tensor& c_bar, const at::Tensor& s, const at::Tensor& d1,
                            const at::Tensor& d2, const at::Tensor& s_bar, const at::Tensor& a_bar);
  // jac_bar_prev += m_bar ⊙ σ'(a_{k-1}); a_bar_prev += σ''(a_{k-1}) ⊙ Σ_j m_bar ⊙ jac_prev.
  // m_bar contiguous [B, d, H].
  void (*jacobian_adjoint)(const at::Tensor& m_bar, const at::Tensor& jac_prev, const at::Tensor& d1_prev,
                           const at::Tensor& d2_prev, const at::Tensor& jac_bar_prev,
                           const at::Tensor& a_bar_prev);
};

// The low-rank (Woodbury) form. The Hessian αI_d + Jᵀ C J (J = [J_0; …; J_{K-1}], [r, d] with
// r = K*H, C = diag(c)) has rank ≤ r above αI, so
//   det Hess = α^(d−r) det(αI_r + C½ J Jᵀ C½)          (the r x r "capacitance" matrix)
//   Hess⁻¹ Jᵀ = α⁻¹ (Jᵀ − Jᵀ C½ Cap⁻¹ C½ J Jᵀ),  tr Hess⁻¹ = (d − r)/α + tr Cap⁻¹,
// O(d r² + r³) per sample instead of O(d² r + d³). Taken when 2r <= d (for d/2 < r < d it measured
// no faster on the CPU, forward + backward: benchmarks/logdet_low_rank.py), α > 0 and W, w >= 0
// (then c = s ⊙ σ''(a) >= 0, so C½ is real and Cap >= αI is positive definite), unless the
// environment variable IVAE_LOGDET_FORM=full asks for the d x d form. The statuses are then Cap's
// (0, -1 for non-finite, k > 0 only if rounding breaks Cap >= αI). minv keeps its [B, d, d] shape
// (shapes must not depend on values) and holds Cap⁻¹ in its top-left r x r block, zeros elsewhere.
bool low_rank_form(const IcnnArgs& a);

// c [K, B, H] as [B, 1, K*H]: one row of K*H values per sample, to scale a [B, d, K*H] Jacobian.
at::Tensor per_sample_columns(const at::Tensor& c);

// Outputs of the forward for a block of rows (views of the op's outputs).
struct ForwardOutputs {
  at::Tensor psi, grad, logdet, info, saved;  // [B], [B, d], [B], int32 [B], [2, K, B, H]
  at::Tensor jac, minv;                       // [B, d, K*H], [B, d, d]; undefined: not kept
  bool low_rank = false;                      // the form of low_rank_form (minv's content)
};

// The op's outputs, allocated: jac and minv have B rows if keep_for_backward, else 0 (the op
// returns them either way; pass them to forward_into / logdet_into only when kept). low_rank:
// minv is zero-filled (only its top-left block is written).
ForwardOutputs allocate_outputs(const IcnnArgs& a, bool keep_for_backward, bool low_rank);

// The low-rank form's Hessian step with ATen calls (any device): logdet, info and, if minv is
// defined, Cap⁻¹ into minv's top-left block. jac [B, d, K*H], c [K, B, H] contiguous.
void low_rank_logdet(const at::Tensor& jac, const at::Tensor& c, double alpha, const at::Tensor& logdet,
                     const at::Tensor& info, const at::Tensor& minv);

// Kernels::hessian_adjoint's contract for the low-rank form, with ATen calls (any device; measured
// faster on the CPU than per-sample loops, whose r x r products are too small to tile):
// P = ω̄ Hess⁻¹ Jᵀ = (ω̄/α) (Jᵀ − Jᵀ C½ Cap⁻¹ C½ J Jᵀ), c̄ = Σ_j Jᵀ ⊙ P, J̄ᵀ = 2 P diag(c).
void low_rank_adjoint(const at::Tensor& jac, const at::Tensor& minv, const at::Tensor& grad_logdet,
                      const at::Tensor& c, double alpha, const at::Tensor& p, const at::Tensor& c_bar);

void forward_into(const Kernels& kernels, const icnn::Elementwise& ew, const IcnnArgs& a,
                  const ForwardOutputs& out);

// The part after the map's forward pass: from out.saved (already filled: a_k and s_k), the
// Jacobians, Hessians and logdet, info (and jac, minv if defined). At = Aᵀ per layer, [K, d, H]
// contiguous. forward_into is icnn::forward_into followed by this; the CPU runs the two over
// different row blocks (this part in smaller, cache-sized ones).
void logdet_into(const Kernels& kernels, const icnn::Elementwise& ew, const IcnnArgs& a, const at::Tensor& At,
                 const ForwardOutputs& out);

// Gradients of Σ_b grad_logdet_b · logdet_b for (x, A, b, W, w, alpha) where output_mask says so
// (else empty tensors). minv is read as the forward wrote it, in the form low_rank_form(a) gives.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const Kernels& kernels, const icnn::Elementwise& ew, const at::Tensor& grad_logdet, const IcnnArgs& a,
    const at::Tensor& saved, const at::Tensor& jac, const at::Tensor& minv, std::array<bool, 6> output_mask);

}  // namespace ivae::logdet
