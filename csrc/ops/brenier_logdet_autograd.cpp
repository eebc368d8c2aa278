// Autograd of ivae_ext::brenier_logdet, in C++ for every device. The backward sums the analytic
// log-determinant backward (brenier_logdet_backward) and, when ψ or ∇ψ were used too, the map's
// (icnn_map_backward, which reads the same `saved`).
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/add.h>
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
using SevenTensors = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

SevenTensors logdet_op(const Tensor& x, const Tensor& A, const Tensor& b, const Tensor& W, const Tensor& w,
                       const Tensor& alpha, bool keep) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ivae_ext::brenier_logdet", "")
                       .typed<SevenTensors(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                           const Tensor&, const Tensor&, bool)>();
  return op.call(x, A, b, W, w, alpha, keep);
}

SixTensors logdet_backward_op(const Tensor& grad_logdet, const Tensor& x, const Tensor& A, const Tensor& b,
                              const Tensor& W, const Tensor& w, const Tensor& alpha, const Tensor& saved,
                              const Tensor& jac, const Tensor& minv, std::array<bool, 6> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ivae_ext::brenier_logdet_backward", "")
                       .typed<SixTensors(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, const Tensor&, std::array<bool, 6>)>();
  return op.call(grad_logdet, x, A, b, W, w, alpha, saved, jac, minv, mask);
}

SixTensors map_backward_op(const Tensor& grad_psi, const Tensor& grad_grad, const Tensor& x, const Tensor& A,
                           const Tensor& b, const Tensor& W, const Tensor& w, const Tensor& alpha,
                           const Tensor& saved, std::array<bool, 6> mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ivae_ext::icnn_map_backward", "")
                       .typed<SixTensors(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                         const Tensor&, std::array<bool, 6>)>();
  return op.call(grad_psi, grad_grad, x, A, b, W, w, alpha, saved, mask);
}

std::array<Tensor, 6> as_array(const SixTensors& t) {
  return {std::get<0>(t), std::get<1>(t), std::get<2>(t), std::get<3>(t), std::get<4>(t), std::get<5>(t)};
}

class BrenierLogdetFunction : public torch::autograd::Function<BrenierLogdetFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& A, const Tensor& b,
                               const Tensor& W, const Tensor& w, const Tensor& alpha, bool keep_for_backward) {
    bool needs_grad = false;
    for (const Tensor* t : {&x, &A, &b, &W, &w, &alpha}) needs_grad = needs_grad || t->requires_grad();
    // The Jacobians and Hessian inverses are what the backward needs; keep them only then.
    const bool keep = keep_for_backward || (needs_grad && at::GradMode::is_enabled());
    SevenTensors out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      out = logdet_op(x, A, b, W, w, alpha, keep);
    }
    const auto& [psi, grad, logdet, info, saved, jac, minv] = out;
    ctx->save_for_backward({x, A, b, W, w, alpha, saved, jac, minv});
    ctx->mark_non_differentiable({info, saved, jac, minv});
    ctx->set_materialize_grads(false);  // unused outputs get no zero-filled gradients
    return {psi, grad, logdet, info, saved, jac, minv};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    std::array<bool, 6> mask;
    for (size_t i = 0; i < mask.size(); ++i) mask[i] = ctx->needs_input_grad(i);
    // As icnn_map: skip the backward ops' Python autograd kernels (they only refuse a second
    // derivative) unless a graph of this backward is being built.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    std::array<Tensor, 6> total;
    if (grad_outputs[2].defined()) {
      Tensor jac = s[7], minv = s[8];
      if (jac.size(0) != s[0].size(0)) {  // not kept (e.g. traced without grad mode): recompute
        at::AutoDispatchBelowADInplaceOrView guard;
        const auto again = logdet_op(s[0], s[1], s[2], s[3], s[4], s[5], true);
        jac = std::get<5>(again);
        minv = std::get<6>(again);
      }
      total = as_array(logdet_backward_op(grad_outputs[2], s[0], s[1], s[2], s[3], s[4], s[5], s[6], jac, minv, mask));
    }
    if (grad_outputs[0].defined() || grad_outputs[1].defined()) {
      const Tensor grad_psi = grad_outputs[0].defined() ? grad_outputs[0] : at::zeros({s[0].size(0)}, s[0].options());
      const Tensor grad_grad = grad_outputs[1].defined() ? grad_outputs[1] : at::zeros_like(s[0]);
      const auto map = as_array(map_backward_op(grad_psi, grad_grad, s[0], s[1], s[2], s[3], s[4], s[5], s[6], mask));
      for (size_t i = 0; i < 6; ++i) {
        if (mask[i]) total[i] = total[i].defined() ? at::add(total[i], map[i]) : map[i];
      }
    }
    variable_list out(7);
    for (size_t i = 0; i < 6; ++i) out[i] = mask[i] ? total[i] : Tensor();
    return out;
  }
};

SevenTensors brenier_logdet_autograd(const Tensor& x, const Tensor& A, const Tensor& b, const Tensor& W,
                                     const Tensor& w, const Tensor& alpha, bool keep_for_backward) {
  const variable_list out = BrenierLogdetFunction::apply(x, A, b, W, w, alpha, keep_for_backward);
  return {out[0], out[1], out[2], out[3], out[4], out[5], out[6]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, Autograd, m) { m.impl("brenier_logdet", &brenier_logdet_autograd); }

}  // namespace ivae
