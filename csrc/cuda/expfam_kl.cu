// CUDA binding of ivae_ext::expfam_kl: checks, device guard, current stream, partial-sum
// reductions. Kernels: expfam_kl.cuh. Compiled here, run only on users' GPUs (no GPU in CI).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <array>

#include "common/expfam_kl_args.h"
#include "cuda/expfam_kl.cuh"

namespace ivae::cuda {
namespace {

// c10's 16-bit float types as CUDA's own (same bits), for the torch-free kernels.
template <typename T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<c10::Half> {
  using type = __half;
};
template <>
struct DeviceType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename scalar_t>
using device_t = typename DeviceType<scalar_t>::type;

template <typename scalar_t>
const device_t<scalar_t>* device_ptr(const at::Tensor& t) {
  return reinterpret_cast<const device_t<scalar_t>*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t>
device_t<scalar_t>* device_mutable_ptr(at::Tensor& t) {
  return t.defined() ? reinterpret_cast<device_t<scalar_t>*>(t.mutable_data_ptr<scalar_t>()) : nullptr;
}

void check_cuda_args(const ExpfamKlArgs& a) {
  TORCH_CHECK_VALUE(a.q_loc.is_cuda(), "expfam_kl: expected CUDA tensors, got ", a.q_loc.device());
  TORCH_CHECK_VALUE(col_tiles_for(a.dim) <= 65535, "expfam_kl: d = ", a.dim,
                    " is too large for the CUDA kernel (at most ", 65535 * kTileCols, ")");
}

template <typename scalar_t>
KlKernelInput<device_t<scalar_t>> kernel_input(const ExpfamKlArgs& a) {
  return {a.batch,
          a.dim,
          device_ptr<scalar_t>(a.q_loc),
          device_ptr<scalar_t>(a.q_log_scale),
          device_ptr<scalar_t>(a.p_loc),
          device_ptr<scalar_t>(a.p_log_scale),
          a.p_loc_layout,
          a.p_log_scale_layout};
}

at::Tensor expfam_kl_cuda(const at::Tensor& q_loc, const at::Tensor& q_log_scale,
                          const at::Tensor& p_loc, const at::Tensor& p_log_scale,
                          c10::string_view family, c10::string_view reduction) {
  const ExpfamKlArgs a = parse_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction);
  check_cuda_args(a);
  const c10::cuda::CUDAGuard guard(q_loc.device());
  at::Tensor out = a.reduce_sum ? at::empty({a.batch}, a.q_loc.options())
                                : at::empty({a.batch, a.dim}, a.q_loc.options());
  if (a.batch == 0) return out;
  if (a.dim == 0) return out.zero_();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "expfam_kl_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (a.reduce_sum) {
      at::Tensor partials = at::empty({col_tiles_for(a.dim), a.batch},
                                      a.q_loc.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      launch_expfam_kl_forward<device_t<scalar_t>, acc_t>(a.family, kernel_input<scalar_t>(a), nullptr,
                                                          partials.mutable_data_ptr<acc_t>(), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      out.copy_(at::sum(partials, {0}));
    } else {
      launch_expfam_kl_forward<device_t<scalar_t>, acc_t>(a.family, kernel_input<scalar_t>(a),
                                                          device_mutable_ptr<scalar_t>(out), nullptr, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

// One p gradient: its partial-sum buffer (by p's layout) and the final reduction to p's shape.
template <typename scalar_t, typename acc_t>
struct PGradBuffers {
  PGradBuffers(bool wanted, const at::Tensor& p, BroadcastLayout layout, const ExpfamKlArgs& a)
      : wanted(wanted), layout(layout), p(p) {
    if (!wanted) return;
    const auto acc_options = p.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    if (layout.full(a.dim)) {
      full = at::empty(p.sizes(), p.options());
    } else if (layout.shared_by_rows()) {
      partials = at::empty({row_blocks_for(a.batch), a.dim}, acc_options);
    } else {
      partials = at::empty({col_tiles_for(a.dim), a.batch}, acc_options);
    }
  }
  PGradOut<device_t<scalar_t>, acc_t> out() {
    PGradOut<device_t<scalar_t>, acc_t> o{nullptr, nullptr, nullptr};
    if (!wanted) return o;
    if (full.defined()) {
      o.full = device_mutable_ptr<scalar_t>(full);
    } else if (layout.shared_by_rows()) {
      o.column_partials = partials.mutable_data_ptr<acc_t>();
    } else {
      o.row_partials = partials.mutable_data_ptr<acc_t>();
    }
    return o;
  }
  at::Tensor finish() {
    if (!wanted) return at::empty({0}, p.options());
    if (full.defined()) return full;
    at::Tensor total = at::sum(partials, {0});
    if (layout.shared_by_rows() && layout.col_stride == 0) total = total.sum();
    return total.reshape(p.sizes()).to(p.scalar_type());
  }
  bool wanted;
  BroadcastLayout layout;
  at::Tensor p, full, partials;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> expfam_kl_backward_cuda(
    const at::Tensor& grad, const at::Tensor& q_loc, const at::Tensor& q_log_scale,
    const at::Tensor& p_loc, const at::Tensor& p_log_scale, c10::string_view family,
    c10::string_view reduction, std::array<bool, 4> mask) {
  const ExpfamKlArgs a = parse_expfam_kl_args(q_loc, q_log_scale, p_loc, p_log_scale, family, reduction);
  check_cuda_args(a);
  const at::Tensor grad_c = check_expfam_kl_grad(grad, a);
  const c10::cuda::CUDAGuard guard(q_loc.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor g_q_loc = mask[0] ? at::empty_like(a.q_loc) : at::empty({0}, a.q_loc.options());
  at::Tensor g_q_log_scale = mask[1] ? at::empty_like(a.q_loc) : at::empty({0}, a.q_loc.options());
  std::array<at::Tensor, 2> g_p;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.q_loc.scalar_type(), "expfam_kl_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PGradBuffers<scalar_t, acc_t> g_p_loc(mask[2], a.p_loc, a.p_loc_layout, a);
    PGradBuffers<scalar_t, acc_t> g_p_log_scale(mask[3], a.p_log_scale, a.p_log_scale_layout, a);
    if (a.batch > 0 && a.dim > 0) {
      launch_expfam_kl_backward<device_t<scalar_t>, acc_t>(
          a.family, kernel_input<scalar_t>(a), device_ptr<scalar_t>(grad_c), !a.reduce_sum,
          mask[0] ? device_mutable_ptr<scalar_t>(g_q_loc) : nullptr,
          mask[1] ? device_mutable_ptr<scalar_t>(g_q_log_scale) : nullptr, g_p_loc.out(),
          g_p_log_scale.out(), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      // Nothing to launch: reduced gradients of an empty grid are zero.
      if (g_p_loc.partials.defined()) g_p_loc.partials.zero_();
      if (g_p_log_scale.partials.defined()) g_p_log_scale.partials.zero_();
    }
    g_p = {g_p_loc.finish(), g_p_log_scale.finish()};
  });
  return {g_q_loc, g_q_log_scale, g_p[0], g_p[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CUDA, m) {
  m.impl("expfam_kl", &expfam_kl_cuda);
  m.impl("expfam_kl_backward", &expfam_kl_backward_cuda);
}

}  // namespace ivae::cuda
