// Validated arguments of ivae_ext::expfam_kl, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include "common/broadcast_layout.h"
#include "math/expfam.h"

namespace ivae {

struct ExpfamKlArgs {
  math::ExpFamily family;
  bool reduce_sum;  // reduction "sum" ([B]) or "none" ([B, d])
  int64_t batch;
  int64_t dim;
  at::Tensor q_loc, q_log_scale, p_loc, p_log_scale;  // contiguous
  BroadcastLayout p_loc_layout, p_log_scale_layout;
};

// Checks every argument (family, reduction, dtypes, devices, shapes) and makes the tensors
// contiguous. Errors name the argument and what was expected.
ExpfamKlArgs parse_expfam_kl_args(const at::Tensor& q_loc, const at::Tensor& q_log_scale,
                                  const at::Tensor& p_loc, const at::Tensor& p_log_scale,
                                  c10::string_view family, c10::string_view reduction);

// The upstream gradient of expfam_kl: [B] for "sum", [B, d] for "none"; returned contiguous.
at::Tensor check_expfam_kl_grad(const at::Tensor& grad, const ExpfamKlArgs& args);

}  // namespace ivae
