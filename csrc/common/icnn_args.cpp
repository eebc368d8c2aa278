#include "common/icnn_args.h"

#include <cmath>
#include <vector>

#include "common/checks.h"

namespace ivae {
namespace {
constexpr const char* kOp = "icnn_map";

void check_shape(const char* op, const char* name, const at::Tensor& t, std::vector<int64_t> expected,
                 int64_t layers, int64_t hidden) {
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ",
                    at::IntArrayRef(expected), " (K=", layers, ", H=", hidden, "), got ", t.sizes());
}
}  // namespace

IcnnArgs parse_icnn_args(const at::Tensor& x, const at::Tensor& A, const at::Tensor& b,
                         const at::Tensor& W, const at::Tensor& w, const at::Tensor& alpha,
                         const char* op) {
  const std::pair<const char*, const at::Tensor*> named[] = {{"x", &x}, {"A", &A}, {"b", &b},
                                                             {"W", &W}, {"w", &w}, {"alpha", &alpha}};
  for (const auto& [name, t] : named) check_floating(op, name, *t);
  for (const auto& [name, t] : named) {
    if (t != &x) check_same_dtype_device(op, "x", x, name, *t);
  }
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must have shape [B, d], got ", x.sizes());
  TORCH_CHECK_VALUE(A.dim() == 3 && A.size(0) >= 1 && A.size(1) >= 1 && A.size(2) == x.size(1), op,
                    ": A must have shape [K, H, d] with K, H >= 1 and d = ", x.size(1), ", got ",
                    A.sizes());
  IcnnArgs args;
  args.batch = x.size(0);
  args.dim = x.size(1);
  args.layers = A.size(0);
  args.hidden = A.size(1);
  const int64_t K = args.layers, H = args.hidden;
  check_shape(op, "b", b, {K, H}, K, H);
  check_shape(op, "W", W, {K - 1, H, H}, K, H);
  check_shape(op, "w", w, {H}, K, H);
  TORCH_CHECK_VALUE(alpha.dim() == 0, op, ": alpha must be a float or a 0-d tensor, got shape ",
                    alpha.sizes());
  // One device-to-host read on CUDA: a negative α silently breaks the Brenier map.
  const double alpha_value = alpha.item<double>();
  TORCH_CHECK_VALUE(alpha_value >= 0, op, ": alpha must be >= 0 (strong convexity), got ", alpha_value);
  TORCH_CHECK_VALUE(std::isfinite(alpha_value), op,
                    ": alpha must be finite (½ α ‖x‖² is not a potential for α = inf), got ", alpha_value);
  args.x = x.contiguous();
  args.A = A.contiguous();
  args.b = b.contiguous();
  args.W = W.contiguous();
  args.w = w.contiguous();
  args.alpha = alpha;
  return args;
}

void check_icnn_backward_args(const IcnnArgs& args, const at::Tensor& grad_psi,
                              const at::Tensor& grad_grad, const at::Tensor& saved) {
  check_same_dtype_device(kOp, "x", args.x, "grad_psi", grad_psi);
  check_same_dtype_device(kOp, "x", args.x, "grad_grad", grad_grad);
  check_same_dtype_device(kOp, "x", args.x, "saved", saved);
  TORCH_CHECK_VALUE(grad_psi.sizes() == at::IntArrayRef({args.batch}), kOp,
                    ": grad_psi must have shape [B] = [", args.batch, "], got ", grad_psi.sizes());
  TORCH_CHECK_VALUE(grad_grad.sizes() == args.x.sizes(), kOp, ": grad_grad must have x's shape ",
                    args.x.sizes(), ", got ", grad_grad.sizes());
  TORCH_CHECK_VALUE(saved.sizes() == at::IntArrayRef({2, args.layers, args.batch, args.hidden}), kOp,
                    ": saved must have shape [2, K, B, H] = [2, ", args.layers, ", ", args.batch, ", ",
                    args.hidden, "], got ", saved.sizes());
}

void check_logdet_backward_args(const IcnnArgs& args, const at::Tensor& grad_logdet, const at::Tensor& saved,
                                const at::Tensor& jac, const at::Tensor& minv) {
  constexpr const char* op = "brenier_logdet";
  const std::pair<const char*, const at::Tensor*> named[] = {
      {"grad_logdet", &grad_logdet}, {"saved", &saved}, {"jac", &jac}, {"minv", &minv}};
  for (const auto& [name, t] : named) check_same_dtype_device(op, "x", args.x, name, *t);
  const int64_t B = args.batch, d = args.dim, K = args.layers, H = args.hidden;
  TORCH_CHECK_VALUE(grad_logdet.sizes() == at::IntArrayRef({B}), op, ": grad_logdet must have shape [B] = [", B,
                    "], got ", grad_logdet.sizes());
  TORCH_CHECK_VALUE(saved.sizes() == at::IntArrayRef({2, K, B, H}), op, ": saved must have shape [2, K, B, H] = [2, ",
                    K, ", ", B, ", ", H, "], got ", saved.sizes());
  TORCH_CHECK_VALUE(jac.sizes() == at::IntArrayRef({B, d, K * H}), op, ": jac must have shape [B, d, K*H] = [", B,
                    ", ", d, ", ", K * H, "] (the forward was called with keep_for_backward=False?), got ",
                    jac.sizes());
  TORCH_CHECK_VALUE(minv.sizes() == at::IntArrayRef({B, d, d}), op, ": minv must have shape [B, d, d] = [", B, ", ",
                    d, ", ", d, "], got ", minv.sizes());
}

}  // namespace ivae
