// Validated arguments of ivae_ext::imq_mmd and its backward, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <array>
#include <tuple>
#include <vector>

namespace ivae {

struct ImqMmdArgs {
  int64_t n;    // samples of x
  int64_t m;    // samples of y
  int64_t dim;  // D
  bool per_dim;
  std::vector<double> scales;  // C_s > 0, finite
  at::Tensor x, y;             // contiguous: [n, D], [m, D]
};

// Checks dtypes (float32/float64, the same), devices, shapes (x [n, D], y [m, D], n, m >= 2:
// the unbiased estimator needs two samples of each) and the scales (non-empty, positive,
// finite; for float32 inputs within [1e-30, 1e30], so that C_s and 1/C_s are normal floats).
// Errors name the argument and what was expected, as ivae_ext/ops/imq_mmd.py does.
ImqMmdArgs parse_imq_mmd_args(const at::Tensor& x, const at::Tensor& y, c10::ArrayRef<double> scales,
                              bool per_dim);

// ivae_ext::imq_mmd_backward, on any device: grad [] times the forward's gradient outputs
// grad_x [n, D] / grad_y [m, D] for the inputs flagged in output_mask (the others come back
// empty). x and y are read for their shapes only; they are arguments so that the autograd graph
// records this op when they require grad (and a double backward reaches its refusal).
std::tuple<at::Tensor, at::Tensor> imq_mmd_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                                    const at::Tensor& grad_x, const at::Tensor& grad_y,
                                                    std::array<bool, 2> output_mask);

}  // namespace ivae
