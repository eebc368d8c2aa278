#include "common/icnn_args.h"

#include <vector>

#include "common/checks.h"

namespace ivae {
namespace {
constexpr const char* kOp = "icnn_map";

void check_shape(const char* name, const at::Tensor& t, std::vector<int64_t> expected, int64_t layers,
                 int64_t hidden) {
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(expected), kOp, ": ", name, " must have shape ",
                    at::IntArrayRef(expected), " (K=", layers, ", H=", hidden, "), got ", t.sizes());
}
}  // namespace

IcnnArgs parse_icnn_args(const at::Tensor& x, const at::Tensor& A, const at::Tensor& b,
                         const at::Tensor& W, const at::Tensor& w, const at::Tensor& alpha) {
  const std::pair<const char*, const at::Tensor*> named[] = {{"x", &x}, {"A", &A}, {"b", &b},
                                                             {"W", &W}, {"w", &w}, {"alpha", &alpha}};
  for (const auto& [name, t] : named) check_floating(kOp, name, *t);
  for (const auto& [name, t] : named) {
    if (t != &x) check_same_dtype_device(kOp, "x", x, name, *t);
  }
  TORCH_CHECK_VALUE(x.dim() == 2, kOp, ": x must have shape [B, d], got ", x.sizes());
  TORCH_CHECK_VALUE(A.dim() == 3 && A.size(0) >= 1 && A.size(1) >= 1 && A.size(2) == x.size(1), kOp,
                    ": A must have shape [K, H, d] with K, H >= 1 and d = ", x.size(1), ", got ",
                    A.sizes());
  IcnnArgs args;
  args.batch = x.size(0);
  args.dim = x.size(1);
  args.layers = A.size(0);
  args.hidden = A.size(1);
  const int64_t K = args.layers, H = args.hidden;
  check_shape("b", b, {K, H}, K, H);
  check_shape("W", W, {K - 1, H, H}, K, H);
  check_shape("w", w, {H}, K, H);
  TORCH_CHECK_VALUE(alpha.dim() == 0, kOp, ": alpha must be a float or a 0-d tensor, got shape ",
                    alpha.sizes());
  // One device-to-host read on CUDA: a negative α silently breaks the Brenier map.
  const double alpha_value = alpha.item<double>();
  TORCH_CHECK_VALUE(alpha_value >= 0, kOp, ": alpha must be >= 0 (strong convexity), got ", alpha_value);
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

}  // namespace ivae
