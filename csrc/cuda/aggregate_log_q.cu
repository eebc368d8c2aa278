// CUDA binding of ivae_ext::aggregate_log_q and its backward: argument checks (shared with the
// CPU binding), device guard, current stream, workspaces. Kernels: aggregate_log_q.cuh.
// Compiled here and run only under a CPU emulation of CUDA (no GPU in CI).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/aggregate_log_q_args.h"
#include "cuda/aggregate_log_q.cuh"

namespace ivae::cuda::aggregate {
namespace {

void check_cuda(const AggregateLogQArgs& a) {
  TORCH_CHECK_VALUE(a.z.is_cuda(), "aggregate_log_q: expected CUDA tensors, got z on ", a.z.device());
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> aggregate_log_q_cuda(const at::Tensor& z, const at::Tensor& q_loc,
                                                        const at::Tensor& q_log_scale, c10::string_view family,
                                                        bool with_marginals) {
  const AggregateLogQArgs a = parse_aggregate_log_q_args(z, q_loc, q_log_scale, family);
  check_cuda(a);
  const c10::cuda::CUDAGuard guard(a.z.device());
  const auto opts = a.z.options();
  at::Tensor log_qz = at::empty({a.batch}, opts);
  at::Tensor marginals = with_marginals ? at::empty({a.batch, a.dim}, opts) : at::empty({0}, opts);
  if (a.batch == 0) return {log_qz, marginals};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.z.scalar_type(), "aggregate_log_q_cuda", [&] {
    // (max, sum) logsumexp states of the column chunks, two scalars each.
    at::Tensor workspace =
        at::empty({2 * forward_workspace_entries(a.batch, a.components, a.dim, with_marginals)}, opts);
    launch_aggregate_log_q_forward<scalar_t>(
        a.family, a.batch, a.components, a.dim, a.z.const_data_ptr<scalar_t>(), a.q_loc.const_data_ptr<scalar_t>(),
        a.q_log_scale.const_data_ptr<scalar_t>(),
        reinterpret_cast<math::LogSumExp<scalar_t>*>(workspace.mutable_data_ptr<scalar_t>()),
        log_qz.mutable_data_ptr<scalar_t>(), with_marginals ? marginals.mutable_data_ptr<scalar_t>() : nullptr,
        stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {log_qz, marginals};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> aggregate_log_q_backward_cuda(
    const std::optional<at::Tensor>& grad_log_qz, const std::optional<at::Tensor>& grad_log_qz_marginals,
    const at::Tensor& z, const at::Tensor& q_loc, const at::Tensor& q_log_scale, const at::Tensor& log_qz,
    const at::Tensor& log_qz_marginals, c10::string_view family, std::array<bool, 3> output_mask) {
  const AggregateLogQArgs a = parse_aggregate_log_q_args(z, q_loc, q_log_scale, family);
  const AggregateLogQBackwardArgs g =
      parse_aggregate_log_q_backward_args(grad_log_qz, grad_log_qz_marginals, log_qz, log_qz_marginals, a);
  check_cuda(a);
  const c10::cuda::CUDAGuard guard(a.z.device());
  const auto opts = a.z.options();
  const int64_t B = a.batch, N = a.components, d = a.dim;
  const bool any_upstream = g.grad_log_qz.defined() || g.grad_log_qz_marginals.defined();
  const bool run = B > 0 && d > 0 && any_upstream;
  // Without upstream gradients (or codes) the gradients are zero, as on the CPU.
  auto output = [&](bool wanted, int64_t rows) {
    if (!wanted) return at::empty({0}, opts);
    return run ? at::empty({rows, d}, opts) : at::zeros({rows, d}, opts);
  };
  at::Tensor grad_z = output(output_mask[0], B);
  at::Tensor grad_loc = output(output_mask[1], N);
  at::Tensor grad_log_scale = output(output_mask[2], N);
  if (!run || !(output_mask[0] || output_mask[1] || output_mask[2])) return {grad_z, grad_loc, grad_log_scale};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.z.scalar_type(), "aggregate_log_q_backward_cuda", [&] {
    using T = scalar_t;
    // Per-chunk partial sums, reduced in chunk order by the launcher.
    auto workspace = [&](bool wanted, int64_t entries) { return wanted ? at::empty({entries}, opts) : at::Tensor(); };
    at::Tensor z_ws = workspace(output_mask[0], grad_z_workspace_entries(B, N, d));
    at::Tensor loc_ws = workspace(output_mask[1], grad_q_workspace_entries(B, N, d));
    at::Tensor log_scale_ws = workspace(output_mask[2], grad_q_workspace_entries(B, N, d));
    auto mutable_or_null = [](at::Tensor& t) { return t.defined() && t.numel() > 0 ? t.mutable_data_ptr<T>() : nullptr; };
    const BackwardInput<T> in{B,
                              N,
                              d,
                              a.z.const_data_ptr<T>(),
                              a.q_loc.const_data_ptr<T>(),
                              a.q_log_scale.const_data_ptr<T>(),
                              g.log_qz.const_data_ptr<T>(),
                              ptr_or_null<T>(g.grad_log_qz),
                              ptr_or_null<T>(g.log_qz_marginals),
                              ptr_or_null<T>(g.grad_log_qz_marginals)};
    launch_aggregate_log_q_backward<T>(a.family, in, output_mask[0] ? mutable_or_null(grad_z) : nullptr,
                                       output_mask[1] ? mutable_or_null(grad_loc) : nullptr,
                                       output_mask[2] ? mutable_or_null(grad_log_scale) : nullptr,
                                       mutable_or_null(z_ws), mutable_or_null(loc_ws), mutable_or_null(log_scale_ws),
                                       stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_z, grad_loc, grad_log_scale};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CUDA, m) {
  m.impl("aggregate_log_q", &aggregate_log_q_cuda);
  m.impl("aggregate_log_q_backward", &aggregate_log_q_backward_cuda);
}

}  // namespace ivae::cuda::aggregate
