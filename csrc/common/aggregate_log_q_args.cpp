#include "common/aggregate_log_q_args.h"

#include <string>

#include "common/checks.h"

namespace ivae {
namespace {

constexpr const char* kOp = "aggregate_log_q";

math::ExpFamily parse_family(c10::string_view family) {
  if (family == "gaussian") return math::ExpFamily::Gaussian;
  if (family == "laplace") return math::ExpFamily::Laplace;
  TORCH_CHECK_VALUE(false, kOp, ": family must be one of ('gaussian', 'laplace'), got '",
                    std::string(family), "'");
}

void check_real(const char* name, const at::Tensor& t) {
  check_floating(kOp, name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, kOp, ": ", name,
                   " must be float32 or float64, got dtype ", t.scalar_type());
}

}  // namespace

AggregateLogQArgs parse_aggregate_log_q_args(const at::Tensor& z, const at::Tensor& q_loc,
                                             const at::Tensor& q_log_scale, c10::string_view family) {
  AggregateLogQArgs args;
  args.family = parse_family(family);
  check_real("z", z);
  check_real("q_loc", q_loc);
  check_real("q_log_scale", q_log_scale);
  check_same_dtype_device(kOp, "z", z, "q_loc", q_loc);
  check_same_dtype_device(kOp, "z", z, "q_log_scale", q_log_scale);
  TORCH_CHECK_VALUE(z.dim() == 2, kOp, ": z must have shape [B, d], got ", z.sizes());
  TORCH_CHECK_VALUE(q_loc.dim() == 2 && q_loc.size(1) == z.size(1), kOp,
                    ": q_loc must have shape [N, d] with z's d = ", z.size(1), ", got ", q_loc.sizes());
  TORCH_CHECK_VALUE(q_log_scale.sizes() == q_loc.sizes(), kOp, ": q_log_scale must have q_loc's shape ",
                    q_loc.sizes(), ", got ", q_log_scale.sizes());
  TORCH_CHECK_VALUE(q_loc.size(0) > 0, kOp,
                    ": q_loc must hold at least one posterior (N >= 1): the mixture is empty, got shape ",
                    q_loc.sizes());
  args.batch = z.size(0);
  args.components = q_loc.size(0);
  args.dim = z.size(1);
  args.z = z.contiguous();
  args.q_loc = q_loc.contiguous();
  args.q_log_scale = q_log_scale.contiguous();
  return args;
}

AggregateLogQBackwardArgs parse_aggregate_log_q_backward_args(
    const std::optional<at::Tensor>& grad_log_qz, const std::optional<at::Tensor>& grad_log_qz_marginals,
    const at::Tensor& log_qz, const at::Tensor& log_qz_marginals, const AggregateLogQArgs& args) {
  AggregateLogQBackwardArgs out;
  const int64_t B = args.batch, d = args.dim;
  check_same_dtype_device(kOp, "z", args.z, "log_qz", log_qz);
  TORCH_CHECK_VALUE(log_qz.dim() == 1 && log_qz.size(0) == B, kOp, ": log_qz must have shape [", B,
                    "], got ", log_qz.sizes());
  out.log_qz = log_qz.contiguous();
  if (grad_log_qz.has_value() && grad_log_qz->defined()) {
    check_same_dtype_device(kOp, "z", args.z, "grad_log_qz", *grad_log_qz);
    TORCH_CHECK_VALUE(grad_log_qz->dim() == 1 && grad_log_qz->size(0) == B, kOp,
                      ": grad_log_qz must have log_qz's shape [", B, "], got ", grad_log_qz->sizes());
    out.grad_log_qz = grad_log_qz->contiguous();
  }
  if (grad_log_qz_marginals.has_value() && grad_log_qz_marginals->defined()) {
    const at::Tensor& g = *grad_log_qz_marginals;
    check_same_dtype_device(kOp, "z", args.z, "grad_log_qz_marginals", g);
    TORCH_CHECK_VALUE(g.dim() == 2 && g.size(0) == B && g.size(1) == d, kOp,
                      ": grad_log_qz_marginals must have shape [", B, ", ", d, "], got ", g.sizes());
    check_same_dtype_device(kOp, "z", args.z, "log_qz_marginals", log_qz_marginals);
    TORCH_CHECK_VALUE(log_qz_marginals.sizes() == g.sizes(), kOp,
                      ": log_qz_marginals must have shape [", B, ", ", d,
                      "] when its gradient is given (the forward ran without marginals?), got ",
                      log_qz_marginals.sizes());
    out.grad_log_qz_marginals = g.contiguous();
    out.log_qz_marginals = log_qz_marginals.contiguous();
  }
  return out;
}

}  // namespace ivae
