// CUDA binding of ivae_ext::brenier_logdet: the fused kernels (brenier_logdet.cuh) plugged into
// the shared GEMM sequence (ops/brenier_logdet.cpp; GEMMs go to cuBLAS through ATen).
// Compiled here, run only on users' GPUs (no GPU in CI).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <ATen/TensorOperators.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/mul.h>

#include "common/icnn_args.h"
#include "cuda/brenier_logdet.cuh"
#include "cuda/icnn_table.h"
#include "ops/brenier_logdet.h"

namespace ivae::cuda::logdet {
namespace {

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

void check_cuda_floating(const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.is_cuda(), "brenier_logdet: expected CUDA tensors, got ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "brenier_logdet: the CUDA kernels take float32 or float64, got ", t.scalar_type());
}

void jacobian_step(const at::Tensor& gemm_out, const at::Tensor& At_k, const at::Tensor& d1_k,
                   const at::Tensor& jac, const at::Tensor& next) {
  AT_DISPATCH_FLOATING_TYPES(jac.scalar_type(), "brenier_jacobian_step_cuda", [&] {
    launch_jacobian_step<scalar_t>(
        jac.size(0), jac.size(1), jac.size(2), gemm_out.defined() ? gemm_out.const_data_ptr<scalar_t>() : nullptr,
        At_k.const_data_ptr<scalar_t>(), d1_k.const_data_ptr<scalar_t>(), jac.mutable_data_ptr<scalar_t>(),
        jac.stride(1), data_or_null<scalar_t>(next), stream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The Hessian products go to cuBLAS (batched GEMM), the factorisation to a per-sample kernel.
void hessian_logdet(const at::Tensor& jac, const at::Tensor& c, const at::Tensor& alpha, const at::Tensor& logdet,
                    const at::Tensor& info, const at::Tensor& minv) {
  at::Tensor hess = at::bmm(jac * ivae::logdet::per_sample_columns(c), jac.transpose(1, 2));
  AT_DISPATCH_FLOATING_TYPES(hess.scalar_type(), "brenier_hessian_logdet_cuda", [&] {
    launch_hessian_logdet<scalar_t>(hess.size(0), hess.size(1), hess.mutable_data_ptr<scalar_t>(),
                                    alpha.const_data_ptr<scalar_t>(), logdet.mutable_data_ptr<scalar_t>(),
                                    info.mutable_data_ptr<int32_t>(), data_or_null<scalar_t>(minv), stream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void hessian_adjoint(const at::Tensor& jac, const at::Tensor& minv, const at::Tensor& grad_logdet,
                     const at::Tensor& c, const at::Tensor& p, const at::Tensor& c_bar) {
  const int64_t K = c.size(0), H = c.size(2);
  at::Tensor p_out = p;
  at::bmm_out(p_out, minv * grad_logdet.view({-1, 1, 1}), jac);
  AT_DISPATCH_FLOATING_TYPES(jac.scalar_type(), "brenier_hessian_adjoint_cuda", [&] {
    for (int64_t k = 0; k < K; ++k) {
      const at::Tensor jac_k = jac.narrow(2, k * H, H);
      launch_hessian_adjoint<scalar_t>(jac.size(0), jac.size(1), H, jac_k.const_data_ptr<scalar_t>(),
                                       p.narrow(2, k * H, H).mutable_data_ptr<scalar_t>(), jac.stride(1),
                                       c[k].const_data_ptr<scalar_t>(), c_bar[k].mutable_data_ptr<scalar_t>(),
                                       stream());
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void curvature_adjoint(const at::Tensor& c_bar, const at::Tensor& s, const at::Tensor& d1, const at::Tensor& d2,
                       const at::Tensor& s_bar, const at::Tensor& a_bar) {
  const int64_t K = c_bar.size(0), per_layer = c_bar.size(1) * c_bar.size(2);
  AT_DISPATCH_FLOATING_TYPES(c_bar.scalar_type(), "brenier_curvature_adjoint_cuda", [&] {
    for (int64_t k = 0; k < K; ++k) {  // s's layers may be spaced apart
      const int64_t e = k * per_layer;
      launch_curvature_adjoint<scalar_t>(per_layer, c_bar.const_data_ptr<scalar_t>() + e,
                                         s.const_data_ptr<scalar_t>() + k * s.stride(0),
                                         d1.const_data_ptr<scalar_t>() + e, d2.const_data_ptr<scalar_t>() + e,
                                         s_bar.mutable_data_ptr<scalar_t>() + e,
                                         a_bar.mutable_data_ptr<scalar_t>() + e, stream());
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void jacobian_adjoint(const at::Tensor& m_bar, const at::Tensor& jac_prev, const at::Tensor& d1_prev,
                      const at::Tensor& d2_prev, const at::Tensor& jac_bar_prev, const at::Tensor& a_bar_prev) {
  TORCH_INTERNAL_ASSERT(jac_bar_prev.stride(1) == jac_prev.stride(1),
                        "brenier_logdet: Jacobian blocks must share their row stride");
  AT_DISPATCH_FLOATING_TYPES(jac_prev.scalar_type(), "brenier_jacobian_adjoint_cuda", [&] {
    launch_jacobian_adjoint<scalar_t>(
        jac_prev.size(0), jac_prev.size(1), jac_prev.size(2), m_bar.const_data_ptr<scalar_t>(),
        jac_prev.const_data_ptr<scalar_t>(), jac_bar_prev.mutable_data_ptr<scalar_t>(), jac_prev.stride(1),
        d1_prev.const_data_ptr<scalar_t>(), d2_prev.const_data_ptr<scalar_t>(),
        a_bar_prev.mutable_data_ptr<scalar_t>(), stream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

const ivae::logdet::Kernels kCudaKernels{&jacobian_step, &hessian_logdet, &hessian_adjoint, &curvature_adjoint,
                                         &jacobian_adjoint};

using SevenTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using SixTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

SevenTensors brenier_logdet_cuda(const at::Tensor& x, const at::Tensor& A, const at::Tensor& b, const at::Tensor& W,
                                 const at::Tensor& w, const at::Tensor& alpha, bool keep_for_backward) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha, "brenier_logdet");
  check_cuda_floating(args.x);
  const c10::cuda::CUDAGuard guard(x.device());
  const ivae::logdet::ForwardOutputs out = ivae::logdet::allocate_outputs(args, keep_for_backward, ivae::logdet::low_rank_form(args));
  ivae::logdet::ForwardOutputs run = out;
  if (!keep_for_backward) run.jac = run.minv = at::Tensor();  // nothing kept: scratch instead
  ivae::logdet::forward_into(kCudaKernels, ivae::cuda::icnn::kCudaElementwise, args, run);
  return {out.psi, out.grad, out.logdet, out.info, out.saved, out.jac, out.minv};
}

SixTensors brenier_logdet_backward_cuda(const at::Tensor& grad_logdet, const at::Tensor& x, const at::Tensor& A,
                                        const at::Tensor& b, const at::Tensor& W, const at::Tensor& w,
                                        const at::Tensor& alpha, const at::Tensor& saved, const at::Tensor& jac,
                                        const at::Tensor& minv, std::array<bool, 6> output_mask) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha, "brenier_logdet");
  check_cuda_floating(args.x);
  check_logdet_backward_args(args, grad_logdet, saved, jac, minv);
  const c10::cuda::CUDAGuard guard(x.device());
  return ivae::logdet::backward(kCudaKernels, ivae::cuda::icnn::kCudaElementwise, grad_logdet, args,
                                saved.contiguous(), jac.contiguous(), minv.contiguous(), output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CUDA, m) {
  m.impl("brenier_logdet", &brenier_logdet_cuda);
  m.impl("brenier_logdet_backward", &brenier_logdet_backward_cuda);
}

}  // namespace ivae::cuda::logdet
