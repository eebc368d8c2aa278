// Validated arguments of ivae_ext::icnn_map (shared by every device's binding).
#pragma once

#include <ATen/core/Tensor.h>

namespace ivae {

struct IcnnArgs {
  int64_t batch, dim, hidden, layers;            // B, d, H, K
  at::Tensor x, A, b, W, w, alpha;               // contiguous; alpha 0-d
};

// Checks shapes ([B, d], [K, H, d], [K, H], [K-1, H, H], [H], 0-d), dtypes, devices and α >= 0.
// `op` names the op in error messages.
IcnnArgs parse_icnn_args(const at::Tensor& x, const at::Tensor& A, const at::Tensor& b,
                         const at::Tensor& W, const at::Tensor& w, const at::Tensor& alpha,
                         const char* op = "icnn_map");

// The backward's extra inputs: grad_psi [B], grad_grad [B, d], saved [2, K, B, H].
void check_icnn_backward_args(const IcnnArgs& args, const at::Tensor& grad_psi,
                              const at::Tensor& grad_grad, const at::Tensor& saved);

// brenier_logdet_backward's extra inputs: grad_logdet [B], saved [2, K, B, H], jac [B, d, K*H]
// and minv [B, d, d] (the last two are empty when the forward did not keep them).
void check_logdet_backward_args(const IcnnArgs& args, const at::Tensor& grad_logdet, const at::Tensor& saved,
                                const at::Tensor& jac, const at::Tensor& minv);

}  // namespace ivae
