// Autograd of ivae_ext::expfam_kl, in C++ for every device: the backward is the fused backward
// op. Registered here rather than from Python because at training-size batches (B=256, d=16)
// the Python autograd path cost several times both kernels together.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

namespace ivae {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor expfam_kl_op(const at::Tensor& q_loc, const at::Tensor& q_log_scale,
                        const at::Tensor& p_loc, const at::Tensor& p_log_scale,
                        c10::string_view family, c10::string_view reduction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ivae_ext::expfam_kl", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, c10::string_view, c10::string_view)>();
  return op.call(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> expfam_kl_backward_op(
    const at::Tensor& grad, const at::Tensor& q_loc, const at::Tensor& q_log_scale,
    const at::Tensor& p_loc, const at::Tensor& p_log_scale, c10::string_view family,
    c10::string_view reduction, std::array<bool, 4> output_mask) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ivae_ext::expfam_kl_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, c10::string_view, c10::string_view, std::array<bool, 4>)>();
  return op.call(grad, q_loc, q_log_scale, p_loc, p_log_scale, family, reduction, output_mask);
}

class ExpfamKlFunction : public torch::autograd::Function<ExpfamKlFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q_loc,
                            const at::Tensor& q_log_scale, const at::Tensor& p_loc,
                            const at::Tensor& p_log_scale, c10::string_view family,
                            c10::string_view reduction) {
    ctx->save_for_backward({q_loc, q_log_scale, p_loc, p_log_scale});
    ctx->saved_data["family"] = std::string(family);
    ctx->saved_data["reduction"] = std::string(reduction);
    at::AutoDispatchBelowADInplaceOrView guard;
    return expfam_kl_op(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const std::array<bool, 4> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      ctx->needs_input_grad(2), ctx->needs_input_grad(3)};
    const std::string family = ctx->saved_data["family"].toStringRef();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    // Skip the backward op's autograd kernel (Python, it only refuses a second derivative)
    // unless a graph of this backward is being built (create_graph=True).
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
    auto [g_q_loc, g_q_log_scale, g_p_loc, g_p_log_scale] = expfam_kl_backward_op(
        grad_outputs[0], saved[0], saved[1], saved[2], saved[3], family, reduction, mask);
    // Gradients nobody asked for come back empty from the op: hand autograd undefined ones.
    return {mask[0] ? g_q_loc : at::Tensor(),
            mask[1] ? g_q_log_scale : at::Tensor(),
            mask[2] ? g_p_loc : at::Tensor(),
            mask[3] ? g_p_log_scale : at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor expfam_kl_autograd(const at::Tensor& q_loc, const at::Tensor& q_log_scale,
                              const at::Tensor& p_loc, const at::Tensor& p_log_scale,
                              c10::string_view family, c10::string_view reduction) {
  return ExpfamKlFunction::apply(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction);
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, Autograd, m) { m.impl("expfam_kl", &expfam_kl_autograd); }

}  // namespace ivae
