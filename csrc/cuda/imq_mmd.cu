// CUDA binding of ivae_ext::imq_mmd (and imq_mmd_backward): argument checks (shared with the CPU
// binding), device guard, current stream, workspace. Kernels: imq_mmd.cuh.
// Compiled here, never run on a GPU: this machine has none (see the status note in imq_mmd.cuh).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <vector>

#include "common/imq_mmd_args.h"
#include "cuda/imq_mmd.cuh"

namespace ivae::cuda::imq {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> imq_mmd_cuda(const at::Tensor& x, const at::Tensor& y,
                                                            c10::ArrayRef<double> scales, bool per_dim,
                                                            std::array<bool, 2> output_mask) {
  const ImqMmdArgs a = parse_imq_mmd_args(x, y, scales, per_dim);
  TORCH_CHECK_VALUE(a.x.is_cuda(), "imq_mmd: expected CUDA tensors, got x on ", a.x.device());
  const c10::cuda::CUDAGuard guard(a.x.device());
  const auto opts = a.x.options();
  const bool with_grad = output_mask[0] || output_mask[1];
  at::Tensor value = at::empty({}, opts);
  // D = 0 leaves the gradients empty; otherwise the kernels write every wanted entry.
  at::Tensor grad_x = output_mask[0] ? at::empty({a.n, a.dim}, opts) : at::empty({0}, opts);
  at::Tensor grad_y = output_mask[1] ? at::empty({a.m, a.dim}, opts) : at::empty({0}, opts);
  if (a.dim == 0) return {at::zeros({}, opts), grad_x, grad_y};
  // C_s and 1/C_s, copied to the device in x's dtype: [2, S].
  std::vector<double> table(a.scales);
  for (double c : a.scales) table.push_back(1.0 / c);
  const at::Tensor scale_table =
      at::empty({2, static_cast<int64_t>(a.scales.size())}, opts.device(at::kCPU).dtype(at::kDouble));
  std::copy(table.begin(), table.end(), scale_table.mutable_data_ptr<double>());
  const at::Tensor device_table = scale_table.to(opts);
  at::Tensor workspace =
      at::empty({imq_workspace_entries(a.n, a.m, a.dim, a.per_dim, with_grad)}, opts.dtype(at::kDouble));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "imq_mmd_cuda", [&] {
    using T = scalar_t;
    const int count = static_cast<int>(a.scales.size());
    const T* table_ptr = device_table.const_data_ptr<T>();
    launch_imq_mmd<T>(a.n, a.m, a.dim, a.per_dim, a.x.const_data_ptr<T>(), a.y.const_data_ptr<T>(), count,
                      table_ptr, table_ptr + count, value.mutable_data_ptr<T>(),
                      output_mask[0] ? grad_x.mutable_data_ptr<T>() : nullptr,
                      output_mask[1] ? grad_y.mutable_data_ptr<T>() : nullptr, workspace.mutable_data_ptr<double>(),
                      stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {value, grad_x, grad_y};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CUDA, m) {
  m.impl("imq_mmd", &imq_mmd_cuda);
  m.impl("imq_mmd_backward", &imq_mmd_backward);
}

}  // namespace ivae::cuda::imq
