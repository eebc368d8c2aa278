// Autograd of ivae_ext::icnn_map, in C++ for every device: the backward is the analytic
// icnn_map_backward op (no autograd graph of the forward is kept).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

namespace ivae {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Tensor = at::Tensor;
using SixTensors = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

std::tuple<Tensor, Tensor, Tensor> icnn_map_op(const Tensor& x, const Tensor& A, const Tensor& b,
                                               const Tensor& W, const Tensor& w, const Tensor& alpha) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ivae_ext::icnn_map", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                                 const Tensor&, const Tensor&, const Tensor&)>();
  return op.call(x, A, b, W, w, alpha);
}

SixTensors icnn_map_backward_op(const Tensor& grad_psi, const Tensor& grad_grad, const Tensor& x,
                                const Tensor& A, const Tensor& b, const Tensor& W, const Tensor& w,
                                const Tensor& alpha, const Tensor& saved, std::array<bool, 6> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ivae_ext::icnn_map_backward", "")
                       .typed<SixTensors(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, std::array<bool, 6>)>();
  return op.call(grad_psi, grad_grad, x, A, b, W, w, alpha, saved, mask);
}

class IcnnMapFunction : public torch::autograd::Function<IcnnMapFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& A, const Tensor& b,
                               const Tensor& W, const Tensor& w, const Tensor& alpha) {
    Tensor psi, grad, saved;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(psi, grad, saved) = icnn_map_op(x, A, b, W, w, alpha);
    }
    ctx->save_for_backward({x, A, b, W, w, alpha, saved});
    ctx->mark_non_differentiable({saved});
    // No zero-filled gradient for `saved` (megabytes, measured ~20% of a small training step);
    // the backward fills in ψ̄ or ḡ itself when only one output was used.
    ctx->set_materialize_grads(false);
    return {psi, grad, saved};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    std::array<bool, 6> mask;
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = ctx->needs_input_grad(i);
    // Skip the backward op's autograd kernel (Python, it only refuses a second derivative)
    // unless a graph of this backward is being built (create_graph=True).
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    const Tensor grad_psi = grad_outputs[0].defined() ? grad_outputs[0] : at::zeros({s[0].size(0)}, s[0].options());
    const Tensor grad_grad = grad_outputs[1].defined() ? grad_outputs[1] : at::zeros_like(s[0]);
    const auto grads = icnn_map_backward_op(grad_psi, grad_grad, s[0], s[1], s[2], s[3], s[4], s[5], s[6], mask);
    const Tensor all[6] = {std::get<0>(grads), std::get<1>(grads), std::get<2>(grads),
                           std::get<3>(grads), std::get<4>(grads), std::get<5>(grads)};
    variable_list out(6);
    for (size_t i = 0; i < 6; ++i) out[i] = mask[i] ? all[i] : Tensor();
    return out;
  }
};

std::tuple<Tensor, Tensor, Tensor> icnn_map_autograd(const Tensor& x, const Tensor& A, const Tensor& b,
                                                     const Tensor& W, const Tensor& w, const Tensor& alpha) {
  const variable_list out = IcnnMapFunction::apply(x, A, b, W, w, alpha);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, Autograd, m) { m.impl("icnn_map", &icnn_map_autograd); }

}  // namespace ivae
