// The ICNN map and its analytic backward as a sequence of GEMMs (ATen: BLAS / cuBLAS) and fused
// elementwise steps supplied per device. Math: DESIGN.md op 2 and math/icnn.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "common/icnn_args.h"

namespace ivae::icnn {

// A device's fused elementwise steps. Tensors are row-major with unit column stride; row
// strides may differ (column blocks of [B, K*H] buffers, or 0 for a row shared by all rows).
struct Elementwise {
  // a = t + bias, z = σ(a), d1 = σ'(a).  t [B, H]; bias [H]; a, z, d1 contiguous [B, H].
  void (*layer_forward)(const at::Tensor& t, const at::Tensor& bias, const at::Tensor& a,
                        const at::Tensor& z, const at::Tensor& d1);
  // psi = z·w + ½α‖x‖² [B]; g = w ⊙ d1 [B, H].  z, d1 [B, H]; w [H]; x [B, d]; alpha 0-d.
  void (*top_forward)(const at::Tensor& z, const at::Tensor& d1, const at::Tensor& w,
                      const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& psi,
                      const at::Tensor& g);
  // z, d1, d2 = σ, σ', σ'' of every pre-activation. All [K, B, H]; d1, d2 contiguous, a and z
  // contiguous within a layer (their layer strides may be larger).
  void (*softplus_all)(const at::Tensor& a, const at::Tensor& z, const at::Tensor& d1,
                       const at::Tensor& d2);
  // ǡ = ż̄ σ', ā = ż̄ ȧ σ'' + z̄ σ' (all [B, H]; d1, d2 contiguous).
  void (*layer_adjoint)(const at::Tensor& zdot_bar, const at::Tensor& z_bar, const at::Tensor& adot,
                        const at::Tensor& d1, const at::Tensor& d2, const at::Tensor& adot_bar,
                        const at::Tensor& a_bar);
};

// (psi [B], grad [B, d], saved [2, K, B, H]): saved holds the pre-activations a_k and the
// reverse-sweep vectors s_k, what the backward needs.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const Elementwise& ew, const IcnnArgs& a);

// The same into given outputs, which may be views of larger ones (a block of rows): psi [B],
// grad [B, d] and saved [2, K, B, H], each [B, H] slab of saved contiguous.
void forward_into(const Elementwise& ew, const IcnnArgs& a, const at::Tensor& psi, const at::Tensor& grad,
                  const at::Tensor& saved);

// Gradients for (x, A, b, W, w, alpha) where output_mask says so (else empty tensors). saved
// may be a block of rows of a larger one, as for forward_into.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const Elementwise& ew, const at::Tensor& grad_psi, const at::Tensor& grad_grad,
    const IcnnArgs& a, const at::Tensor& saved, std::array<bool, 6> output_mask);

}  // namespace ivae::icnn
