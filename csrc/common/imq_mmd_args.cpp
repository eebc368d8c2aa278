#include "common/imq_mmd_args.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/mul.h>

#include <cmath>

#include "common/checks.h"

namespace ivae {
namespace {

constexpr const char* kOp = "imq_mmd";

void check_real(const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.defined(), kOp, ": ", name, " must be a defined tensor");
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, kOp, ": ", name,
                   " must be float32 or float64, got dtype ", t.scalar_type());
}

}  // namespace

ImqMmdArgs parse_imq_mmd_args(const at::Tensor& x, const at::Tensor& y, c10::ArrayRef<double> scales,
                              bool per_dim) {
  check_real("x", x);
  check_real("y", y);
  check_same_dtype_device(kOp, "x", x, "y", y);
  TORCH_CHECK_VALUE(x.dim() == 2, kOp, ": x must have shape [n, D], got ", x.sizes());
  TORCH_CHECK_VALUE(y.dim() == 2 && y.size(1) == x.size(1), kOp, ": y must have shape [m, D] with x's D = ",
                    x.size(1), ", got ", y.sizes());
  TORCH_CHECK_VALUE(x.size(0) >= 2, kOp,
                    ": x must hold at least two samples (n >= 2) for the unbiased estimator, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(y.size(0) >= 2, kOp,
                    ": y must hold at least two samples (m >= 2) for the unbiased estimator, got shape ",
                    y.sizes());
  TORCH_CHECK_VALUE(!scales.empty(), kOp, ": scales must hold at least one kernel scale, got none");
  const bool single = x.scalar_type() == at::kFloat;
  for (size_t s = 0; s < scales.size(); ++s) {
    const double c = scales[s];
    TORCH_CHECK_VALUE(std::isfinite(c) && c > 0.0, kOp, ": scales must be positive and finite, got scales[", s,
                      "] = ", c);
    TORCH_CHECK_VALUE(!single || (c >= 1e-30 && c <= 1e30), kOp,
                      ": scales must lie in [1e-30, 1e30] for float32 inputs, got scales[", s, "] = ", c);
  }
  ImqMmdArgs args;
  args.n = x.size(0);
  args.m = y.size(0);
  args.dim = x.size(1);
  args.per_dim = per_dim;
  args.scales.assign(scales.begin(), scales.end());
  args.x = x.contiguous();
  args.y = y.contiguous();
  return args;
}

std::tuple<at::Tensor, at::Tensor> imq_mmd_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                                    const at::Tensor& grad_x, const at::Tensor& grad_y,
                                                    std::array<bool, 2> output_mask) {
  check_real("x", x);
  check_same_dtype_device(kOp, "x", x, "grad", grad);
  TORCH_CHECK_VALUE(grad.dim() == 0, kOp, ": grad (of the scalar MMD) must have shape [], got ", grad.sizes());
  const char* names[2] = {"grad_x", "grad_y"};
  const at::Tensor* inputs[2] = {&x, &y};
  const at::Tensor* grads[2] = {&grad_x, &grad_y};
  for (int t = 0; t < 2; ++t) {
    if (!output_mask[t]) continue;
    check_same_dtype_device(kOp, "x", x, names[t], *grads[t]);
    TORCH_CHECK_VALUE(grads[t]->sizes() == inputs[t]->sizes(), kOp, ": ", names[t], " must have shape ",
                      inputs[t]->sizes(), " (the forward ran without this gradient?), got ", grads[t]->sizes());
  }
  auto scaled = [&](int t) { return output_mask[t] ? at::mul(*grads[t], grad) : at::empty({0}, x.options()); };
  return {scaled(0), scaled(1)};
}

}  // namespace ivae
