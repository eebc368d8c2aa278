#include "common/expfam_kl_args.h"

#include <string>
#include <vector>

#include "common/checks.h"

namespace ivae {
namespace {

constexpr const char* kOp = "expfam_kl";

math::ExpFamily parse_family(c10::string_view family) {
  if (family == "gaussian") return math::ExpFamily::Gaussian;
  if (family == "laplace") return math::ExpFamily::Laplace;
  TORCH_CHECK_VALUE(false, kOp, ": family must be one of ('gaussian', 'laplace'), got '",
                    std::string(family), "'");
}

bool parse_reduce_sum(c10::string_view reduction) {
  if (reduction == "sum") return true;
  if (reduction == "none") return false;
  TORCH_CHECK_VALUE(false, kOp, ": reduction must be one of ('sum', 'none'), got '",
                    std::string(reduction), "'");
}

// p's shape, right-aligned against [B, d], must be a scalar, [d], [1, d], [B, 1] or [B, d].
BroadcastLayout broadcast_layout(const char* name, const at::Tensor& p, int64_t batch, int64_t dim) {
  const auto sizes = p.sizes();
  const int64_t rows = sizes.size() == 2 ? sizes[0] : 1;
  const int64_t cols = sizes.empty() ? 1 : sizes.back();
  const bool ok = sizes.size() <= 2 && (rows == 1 || rows == batch) && (cols == 1 || cols == dim);
  TORCH_CHECK_VALUE(ok, kOp, ": ", name, " must be broadcastable to q_loc's shape [B, d] = [",
                    batch, ", ", dim, "] (a scalar, [d], [1, d], [B, 1] or [B, d]), got ", sizes);
  BroadcastLayout layout;
  layout.col_stride = cols == dim ? 1 : 0;
  layout.row_stride = rows == batch && sizes.size() == 2 ? (layout.col_stride ? dim : 1) : 0;
  return layout;
}

}  // namespace

ExpfamKlArgs parse_expfam_kl_args(const at::Tensor& q_loc, const at::Tensor& q_log_scale,
                                  const at::Tensor& p_loc, const at::Tensor& p_log_scale,
                                  c10::string_view family, c10::string_view reduction) {
  ExpfamKlArgs args;
  args.family = parse_family(family);
  args.reduce_sum = parse_reduce_sum(reduction);
  check_floating(kOp, "q_loc", q_loc);
  check_floating(kOp, "q_log_scale", q_log_scale);
  check_floating(kOp, "p_loc", p_loc);
  check_floating(kOp, "p_log_scale", p_log_scale);
  check_same_dtype_device(kOp, "q_loc", q_loc, "q_log_scale", q_log_scale);
  check_same_dtype_device(kOp, "q_loc", q_loc, "p_loc", p_loc);
  check_same_dtype_device(kOp, "q_loc", q_loc, "p_log_scale", p_log_scale);
  TORCH_CHECK_VALUE(q_loc.dim() == 2, kOp, ": q_loc must have shape [B, d], got ", q_loc.sizes());
  TORCH_CHECK_VALUE(q_log_scale.sizes() == q_loc.sizes(), kOp,
                    ": q_log_scale must have q_loc's shape ", q_loc.sizes(), ", got ",
                    q_log_scale.sizes());
  args.batch = q_loc.size(0);
  args.dim = q_loc.size(1);
  args.p_loc_layout = broadcast_layout("p_loc", p_loc, args.batch, args.dim);
  args.p_log_scale_layout = broadcast_layout("p_log_scale", p_log_scale, args.batch, args.dim);
  args.q_loc = q_loc.contiguous();
  args.q_log_scale = q_log_scale.contiguous();
  args.p_loc = p_loc.contiguous();
  args.p_log_scale = p_log_scale.contiguous();
  return args;
}

at::Tensor check_expfam_kl_grad(const at::Tensor& grad, const ExpfamKlArgs& args) {
  check_floating(kOp, "grad", grad);
  check_same_dtype_device(kOp, "q_loc", args.q_loc, "grad", grad);
  const bool ok = args.reduce_sum
                      ? grad.dim() == 1 && grad.size(0) == args.batch
                      : grad.dim() == 2 && grad.size(0) == args.batch && grad.size(1) == args.dim;
  const std::vector<int64_t> expected = args.reduce_sum ? std::vector<int64_t>{args.batch}
                                                         : std::vector<int64_t>{args.batch, args.dim};
  TORCH_CHECK_VALUE(ok, kOp, ": grad must have the output's shape ", at::IntArrayRef(expected),
                    ", got ", grad.sizes());
  return grad.contiguous();
}

}  // namespace ivae
