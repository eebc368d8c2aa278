// CUDA binding of ivae_ext::icnn_map: the fused elementwise kernels (icnn_elementwise.cuh) plugged
// into the shared GEMM sequence (ops/icnn_map.cpp; GEMMs go to cuBLAS through ATen).
// Compiled here, run only on users' GPUs (no GPU in CI).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "common/icnn_args.h"
#include "cuda/icnn_elementwise.cuh"
#include "cuda/icnn_table.h"
#include "ops/icnn_map.h"

namespace ivae::cuda::icnn {
namespace {

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

void check_cuda_floating(const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.is_cuda(), "icnn_map: expected CUDA tensors, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "icnn_map: the CUDA kernels take float32 or float64, got ", t.scalar_type());
}

void layer_forward(const at::Tensor& t, const at::Tensor& bias, const at::Tensor& a, const at::Tensor& z,
                   const at::Tensor& d1) {
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "icnn_layer_forward_cuda", [&] {
    launch_layer_forward<scalar_t>(t.size(0), t.size(1), t.const_data_ptr<scalar_t>(), t.stride(0),
                                   bias.const_data_ptr<scalar_t>(), a.mutable_data_ptr<scalar_t>(),
                                   z.mutable_data_ptr<scalar_t>(), d1.mutable_data_ptr<scalar_t>(), stream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void top_forward(const at::Tensor& z, const at::Tensor& d1, const at::Tensor& w, const at::Tensor& x,
                 const at::Tensor& alpha, const at::Tensor& psi, const at::Tensor& g) {
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "icnn_top_forward_cuda", [&] {
    launch_top_forward<scalar_t>(z.size(0), z.size(1), x.size(1), z.const_data_ptr<scalar_t>(),
                                 d1.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                 x.const_data_ptr<scalar_t>(), alpha.const_data_ptr<scalar_t>(),
                                 psi.mutable_data_ptr<scalar_t>(), g.mutable_data_ptr<scalar_t>(), g.stride(0),
                                 stream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void softplus_all(const at::Tensor& a, const at::Tensor& z, const at::Tensor& d1, const at::Tensor& d2) {
  const int64_t per_layer = a.size(1) * a.size(2);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "icnn_softplus_all_cuda", [&] {
    for (int64_t k = 0; k < a.size(0); ++k) {  // a's and z's layers may be spaced apart
      const int64_t offset = k * per_layer;
      launch_softplus_all<scalar_t>(per_layer, a.const_data_ptr<scalar_t>() + k * a.stride(0),
                                    z.mutable_data_ptr<scalar_t>() + k * z.stride(0),
                                    d1.mutable_data_ptr<scalar_t>() + offset,
                                    d2.mutable_data_ptr<scalar_t>() + offset, stream());
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void layer_adjoint(const at::Tensor& zdot_bar, const at::Tensor& z_bar, const at::Tensor& adot,
                   const at::Tensor& d1, const at::Tensor& d2, const at::Tensor& adot_bar,
                   const at::Tensor& a_bar) {
  AT_DISPATCH_FLOATING_TYPES(adot.scalar_type(), "icnn_layer_adjoint_cuda", [&] {
    launch_layer_adjoint<scalar_t>(
        adot.size(0), adot.size(1), zdot_bar.const_data_ptr<scalar_t>(), zdot_bar.stride(0),
        z_bar.const_data_ptr<scalar_t>(), z_bar.stride(0), adot.const_data_ptr<scalar_t>(), adot.stride(0),
        d1.const_data_ptr<scalar_t>(), d2.const_data_ptr<scalar_t>(), adot_bar.mutable_data_ptr<scalar_t>(),
        adot_bar.stride(0), a_bar.mutable_data_ptr<scalar_t>(), a_bar.stride(0), stream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

const ivae::icnn::Elementwise kCudaElementwise{&layer_forward, &top_forward, &softplus_all, &layer_adjoint};

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> icnn_map_cuda(const at::Tensor& x, const at::Tensor& A,
                                                             const at::Tensor& b, const at::Tensor& W,
                                                             const at::Tensor& w, const at::Tensor& alpha) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha);
  check_cuda_floating(args.x);
  const c10::cuda::CUDAGuard guard(x.device());
  return ivae::icnn::forward(kCudaElementwise, args);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> icnn_map_backward_cuda(
    const at::Tensor& grad_psi, const at::Tensor& grad_grad, const at::Tensor& x, const at::Tensor& A,
    const at::Tensor& b, const at::Tensor& W, const at::Tensor& w, const at::Tensor& alpha,
    const at::Tensor& saved, std::array<bool, 6> output_mask) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha);
  check_cuda_floating(args.x);
  check_icnn_backward_args(args, grad_psi, grad_grad, saved);
  const c10::cuda::CUDAGuard guard(x.device());
  return ivae::icnn::backward(kCudaElementwise, grad_psi, grad_grad, args, saved.contiguous(), output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CUDA, m) {
  m.impl("icnn_map", &icnn_map_cuda);
  m.impl("icnn_map_backward", &icnn_map_backward_cuda);
}

}  // namespace ivae::cuda::icnn
