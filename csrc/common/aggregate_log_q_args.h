// Validated arguments of ivae_ext::aggregate_log_q and its backward, shared by the CPU and CUDA
// bindings.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "math/expfam.h"

namespace ivae {

struct AggregateLogQArgs {
  math::ExpFamily family;
  int64_t batch;       // B: codes z_i
  int64_t components;  // N: posteriors q(z | x_j) in the mixture
  int64_t dim;         // d
  at::Tensor z, q_loc, q_log_scale;  // contiguous: [B, d], [N, d], [N, d]
};

// Checks family, dtypes (float32/float64), devices and shapes; N = 0 is an error (an empty
// mixture has no density). Errors name the argument and what was expected.
AggregateLogQArgs parse_aggregate_log_q_args(const at::Tensor& z, const at::Tensor& q_loc,
                                             const at::Tensor& q_log_scale, c10::string_view family);

// The backward's extra inputs: upstream gradients (either may be absent) and the forward's
// outputs. Returns them contiguous; checks shapes, dtypes and devices.
struct AggregateLogQBackwardArgs {
  at::Tensor grad_log_qz;               // [B] or undefined
  at::Tensor grad_log_qz_marginals;     // [B, d] or undefined
  at::Tensor log_qz, log_qz_marginals;  // [B], [B, d] (marginals may be empty when not wanted)
};

AggregateLogQBackwardArgs parse_aggregate_log_q_backward_args(
    const std::optional<at::Tensor>& grad_log_qz, const std::optional<at::Tensor>& grad_log_qz_marginals,
    const at::Tensor& log_qz, const at::Tensor& log_qz_marginals, const AggregateLogQArgs& args);

}  // namespace ivae
