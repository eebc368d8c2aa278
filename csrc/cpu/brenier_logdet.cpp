// CPU binding of ivae_ext::brenier_logdet, one row block per thread: the forward on the register
// tiles (cpu/brenier_tiled.cpp) and the d x d form's backward too (cpu/brenier_tiled_backward.cpp);
// the low-rank form's backward, and everything under IVAE_ICNN_CPU_PATH=aten, is the fused steps
// (cpu/brenier_rows.cpp) plugged into the shared ATen-GEMM sequence of ops/brenier_logdet.cpp (the
// CUDA path). A tiled low-rank backward (the capacitance adjoint by ATen first, the rest tiled)
// measured slower than that sequence (0.8-0.95x at d = 32-64) and was not kept.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>


#include <algorithm>

#include "common/icnn_args.h"
#include "cpu/brenier_rows.h"
#include "cpu/brenier_tiled.h"
#include "cpu/icnn_packing.h"
#include "cpu/icnn_partial_grads.h"
#include "cpu/icnn_table.h"
#include "cpu/row_blocks.h"
#include "ops/brenier_logdet.h"

namespace ivae::cpu {
namespace {

constexpr int64_t kTaskElements = 16384;

int64_t grain_samples(int64_t per_sample) {
  return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(per_sample, 1));
}

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.mutable_data_ptr<T>() : nullptr;
}

void jacobian_step(const at::Tensor& gemm_out, const at::Tensor& At_k, const at::Tensor& d1_k,
                   const at::Tensor& jac, const at::Tensor& next) {
  const int64_t B = jac.size(0), d = jac.size(1), H = jac.size(2), ld = jac.stride(1);
  AT_DISPATCH_FLOATING_TYPES(jac.scalar_type(), "brenier_jacobian_step", [&] {
    const scalar_t* g = gemm_out.defined() ? gemm_out.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t *at = At_k.const_data_ptr<scalar_t>(), *d1 = d1_k.const_data_ptr<scalar_t>();
    scalar_t* jp = jac.mutable_data_ptr<scalar_t>();
    scalar_t* np = data_or_null<scalar_t>(next);
    at::parallel_for(0, B, grain_samples(d * H), [&](int64_t b0, int64_t b1) {
      const int64_t r = b0 * d;
      brenier_jacobian_step_rows(b1 - b0, d, H, g ? g + r * H : nullptr, at, d1 + b0 * H, jp + r * ld, ld,
                                 np ? np + r * H : nullptr);
    });
  });
}

void hessian_logdet(const at::Tensor& jac, const at::Tensor& c, const at::Tensor& alpha, const at::Tensor& logdet,
                    const at::Tensor& info, const at::Tensor& minv) {
  const int64_t B = jac.size(0), d = jac.size(1), K = c.size(0), H = c.size(2);
  AT_DISPATCH_FLOATING_TYPES(jac.scalar_type(), "brenier_hessian_logdet", [&] {
    const scalar_t alpha_value = alpha.item<scalar_t>();
    const scalar_t *jp = jac.const_data_ptr<scalar_t>(), *cp = c.const_data_ptr<scalar_t>();
    scalar_t* lp = logdet.mutable_data_ptr<scalar_t>();
    int32_t* ip = info.mutable_data_ptr<int32_t>();
    scalar_t* mp = data_or_null<scalar_t>(minv);
    at::parallel_for(0, B, grain_samples(d * d * K * H), [&](int64_t b0, int64_t b1) {
      brenier_hessian_logdet_rows(b1 - b0, d, K, H, jp + b0 * d * K * H, cp + b0 * H, B * H, alpha_value,
                                  lp + b0, ip + b0, mp ? mp + b0 * d * d : nullptr);
    });
  });
}

void hessian_adjoint(const at::Tensor& jac, const at::Tensor& minv, const at::Tensor& grad_logdet,
                     const at::Tensor& c, const at::Tensor& p, const at::Tensor& c_bar) {
  const int64_t B = jac.size(0), d = jac.size(1), K = c.size(0), H = c.size(2);
  AT_DISPATCH_FLOATING_TYPES(jac.scalar_type(), "brenier_hessian_adjoint", [&] {
    const scalar_t *jp = jac.const_data_ptr<scalar_t>(), *mp = minv.const_data_ptr<scalar_t>(),
                   *op = grad_logdet.const_data_ptr<scalar_t>(), *cp = c.const_data_ptr<scalar_t>();
    scalar_t *pp = p.mutable_data_ptr<scalar_t>(), *cb = c_bar.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, grain_samples(d * d * K * H), [&](int64_t b0, int64_t b1) {
      brenier_hessian_adjoint_rows(b1 - b0, d, K, H, jp + b0 * d * K * H, mp + b0 * d * d, op + b0, cp + b0 * H,
                                   B * H, pp + b0 * d * K * H, cb + b0 * H);
    });
  });
}

void curvature_adjoint(const at::Tensor& c_bar, const at::Tensor& s, const at::Tensor& d1, const at::Tensor& d2,
                       const at::Tensor& s_bar, const at::Tensor& a_bar) {
  const int64_t K = c_bar.size(0), per_layer = c_bar.size(1) * c_bar.size(2);
  AT_DISPATCH_FLOATING_TYPES(c_bar.scalar_type(), "brenier_curvature_adjoint", [&] {
    for (int64_t k = 0; k < K; ++k) {  // s's layers may be spaced apart
      const int64_t e = k * per_layer;
      const scalar_t* sp = s.const_data_ptr<scalar_t>() + k * s.stride(0);
      const scalar_t *cb = c_bar.const_data_ptr<scalar_t>() + e, *p1 = d1.const_data_ptr<scalar_t>() + e,
                     *p2 = d2.const_data_ptr<scalar_t>() + e;
      scalar_t *sb = s_bar.mutable_data_ptr<scalar_t>() + e, *ab = a_bar.mutable_data_ptr<scalar_t>() + e;
      at::parallel_for(0, per_layer, kTaskElements, [&](int64_t i0, int64_t i1) {
        brenier_curvature_adjoint_rows(i1 - i0, cb + i0, sp + i0, p1 + i0, p2 + i0, sb + i0, ab + i0);
      });
    }
  });
}

void jacobian_adjoint(const at::Tensor& m_bar, const at::Tensor& jac_prev, const at::Tensor& d1_prev,
                      const at::Tensor& d2_prev, const at::Tensor& jac_bar_prev, const at::Tensor& a_bar_prev) {
  const int64_t B = jac_prev.size(0), d = jac_prev.size(1), H = jac_prev.size(2), ld = jac_prev.stride(1);
  TORCH_INTERNAL_ASSERT(jac_bar_prev.stride(1) == ld, "brenier_logdet: Jacobian blocks must share their row stride");
  AT_DISPATCH_FLOATING_TYPES(jac_prev.scalar_type(), "brenier_jacobian_adjoint", [&] {
    const scalar_t *mb = m_bar.const_data_ptr<scalar_t>(), *jp = jac_prev.const_data_ptr<scalar_t>(),
                   *d1 = d1_prev.const_data_ptr<scalar_t>(), *d2 = d2_prev.const_data_ptr<scalar_t>();
    scalar_t *jb = jac_bar_prev.mutable_data_ptr<scalar_t>(), *ab = a_bar_prev.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, grain_samples(d * H), [&](int64_t b0, int64_t b1) {
      const int64_t r = b0 * d;
      brenier_jacobian_adjoint_rows(b1 - b0, d, H, mb + r * H, jp + r * ld, jb + r * ld, ld, d1 + b0 * H,
                                    d2 + b0 * H, ab + b0 * H);
    });
  });
}

const logdet::Kernels kCpuKernels{&jacobian_step, &hessian_logdet, &hessian_adjoint, &curvature_adjoint,
                                  &jacobian_adjoint};

void check_cpu_floating(const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "brenier_logdet: the CPU kernels take float32 or float64, got ", t.scalar_type());
}

// Per sample, the Jacobians (and in the backward their adjoints), [d, K*H] each, dominate the
// temporaries.
int64_t logdet_row_bytes(const IcnnArgs& a) {
  return 3 * a.dim * a.layers * a.hidden * static_cast<int64_t>(a.x.element_size());
}
constexpr int64_t kBlockCacheBytes = int64_t{1} << 20;
// The Jacobian part makes about three ATen calls per layer and block (the map's pass ~15): it can
// afford smaller blocks.
constexpr int64_t kMinJacobianBlockRows = 32;

using SevenTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

SevenTensors brenier_logdet_aten_path(const IcnnArgs& args, bool keep_for_backward, bool low_rank) {
  const int64_t B = args.batch;
  const logdet::ForwardOutputs out = logdet::allocate_outputs(args, keep_for_backward, low_rank);
  // One block per thread: the map's forward pass over the block, then the Jacobian / Hessian part
  // over sub-blocks small enough for their Jacobians to stay in cache. One parallel region: no
  // barrier between the two.
  const at::Tensor At = args.A.transpose(1, 2).contiguous();
  const int64_t blocks = row_blocks(B);
  for_each_block(blocks, [&](int64_t i) {
    const auto [begin, end] = block_rows(B, blocks, i);
    const int64_t n = end - begin;
    const IcnnArgs block_args = rows_of(args, begin, end);
    icnn::forward_into(kCpuElementwise, block_args, out.psi.narrow(0, begin, n), out.grad.narrow(0, begin, n),
                       out.saved.narrow(2, begin, n));
    const int64_t parts = cache_blocks(n, logdet_row_bytes(args), kBlockCacheBytes, kMinJacobianBlockRows);
    for (int64_t j = 0; j < parts; ++j) {
      const auto [first, last] = block_rows(n, parts, j);
      const int64_t r = begin + first, m = last - first;
      logdet::ForwardOutputs rows{out.psi.narrow(0, r, m), out.grad.narrow(0, r, m), out.logdet.narrow(0, r, m),
                                  out.info.narrow(0, r, m), out.saved.narrow(2, r, m), at::Tensor(), at::Tensor(),
                                  low_rank};
      if (keep_for_backward) {
        rows.jac = out.jac.narrow(0, r, m);
        rows.minv = out.minv.narrow(0, r, m);
      }
      logdet::logdet_into(kCpuKernels, kCpuElementwise, rows_of(args, r, r + m), At, rows);
    }
  });
  return {out.psi, out.grad, out.logdet, out.info, out.saved, out.jac, out.minv};
}

SevenTensors brenier_logdet_cpu(const at::Tensor& x, const at::Tensor& A, const at::Tensor& b, const at::Tensor& W,
                                const at::Tensor& w, const at::Tensor& alpha, bool keep_for_backward) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha, "brenier_logdet");
  check_cpu_floating(args.x);
  const bool low_rank = logdet::low_rank_form(args);
  if (aten_path_requested()) return brenier_logdet_aten_path(args, keep_for_backward, low_rank);
  const int64_t B = args.batch, d = args.dim, H = args.hidden, width = args.layers * H;
  const logdet::ForwardOutputs out = logdet::allocate_outputs(args, keep_for_backward, low_rank);
  AT_DISPATCH_FLOATING_TYPES(args.x.scalar_type(), "brenier_logdet_cpu", [&] {
    const IcnnPacked<scalar_t> packed = pack_args<scalar_t>(args);
    const scalar_t* xp = args.x.const_data_ptr<scalar_t>();
    scalar_t *psi = out.psi.mutable_data_ptr<scalar_t>(), *grad = out.grad.mutable_data_ptr<scalar_t>();
    scalar_t* saved_a = out.saved.mutable_data_ptr<scalar_t>();
    scalar_t* saved_s = saved_a + args.layers * B * H;
    scalar_t* logdet = out.logdet.mutable_data_ptr<scalar_t>();
    int32_t* info = out.info.mutable_data_ptr<int32_t>();
    scalar_t* jac = keep_for_backward ? out.jac.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* minv = keep_for_backward ? out.minv.mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t blocks = row_blocks(B);
    for_each_block(blocks, [&](int64_t i) {
      const auto [begin, end] = block_rows(B, blocks, i);
      brenier_tiled_logdet(packed, end - begin, xp + begin * d, psi + begin, grad + begin * d, saved_a + begin * H,
                           saved_s + begin * H, B * H, logdet + begin, info + begin,
                           jac ? jac + begin * d * width : nullptr, minv ? minv + begin * d * d : nullptr,
                           low_rank);
    });
  });
  return {out.psi, out.grad, out.logdet, out.info, out.saved, out.jac, out.minv};
}

// The d x d form's backward on the tiles (cpu/brenier_tiled_backward.cpp), one row block per thread.
SixGrads brenier_logdet_backward_tiled(const IcnnArgs& args, const at::Tensor& omega, const at::Tensor& saved,
                                       const at::Tensor& jac, const at::Tensor& minv, std::array<bool, 6> mask) {
  const auto opts = args.x.options();
  const int64_t B = args.batch, d = args.dim, H = args.hidden, width = args.layers * H;
  at::Tensor x_bar = mask[0] ? at::empty({B, d}, opts) : at::empty({0}, opts);
  at::Tensor A_bar = at::empty({0}, opts), b_bar = A_bar, W_bar = A_bar, w_bar = A_bar, alpha_bar = A_bar;
  AT_DISPATCH_FLOATING_TYPES(args.x.scalar_type(), "brenier_logdet_backward_cpu", [&] {
    const IcnnPacked<scalar_t> packed = pack_args<scalar_t>(args);
    const scalar_t *xp = args.x.const_data_ptr<scalar_t>(), *op = omega.const_data_ptr<scalar_t>();
    const scalar_t* sa = saved.const_data_ptr<scalar_t>();
    const scalar_t* ss = sa + args.layers * B * H;
    const scalar_t *jp = jac.const_data_ptr<scalar_t>(), *mp = minv.const_data_ptr<scalar_t>();
    scalar_t* xb = mask[0] ? x_bar.mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t blocks = row_blocks(B);
    std::vector<IcnnPartial<scalar_t>> parts(blocks);
    for_each_block(blocks, [&](int64_t i) {
      const auto [begin, end] = block_rows(B, blocks, i);
      parts[i] = icnn_partial_for(packed);
      brenier_tiled_logdet_backward(packed, end - begin, xp + begin * d, op + begin, sa + begin * H, ss + begin * H,
                                    B * H, jp + begin * d * width, mp + begin * d * d, mask,
                                    xb ? xb + begin * d : nullptr, parts[i]);
    });
    write_parameter_grads(packed, parts, mask, A_bar, b_bar, W_bar, w_bar, alpha_bar);
  });
  return {x_bar, A_bar, b_bar, W_bar, w_bar, alpha_bar};
}

SixGrads brenier_logdet_backward_cpu(const at::Tensor& grad_logdet, const at::Tensor& x, const at::Tensor& A,
                                     const at::Tensor& b, const at::Tensor& W, const at::Tensor& w,
                                     const at::Tensor& alpha, const at::Tensor& saved, const at::Tensor& jac,
                                     const at::Tensor& minv, std::array<bool, 6> output_mask) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha, "brenier_logdet");
  check_cpu_floating(args.x);
  check_logdet_backward_args(args, grad_logdet, saved, jac, minv);
  const at::Tensor saved_c = saved.contiguous(), jac_c = jac.contiguous(), minv_c = minv.contiguous();
  const at::Tensor omega = grad_logdet.contiguous();
  if (!aten_path_requested() && !logdet::low_rank_form(args)) {
    return brenier_logdet_backward_tiled(args, omega, saved_c, jac_c, minv_c, output_mask);
  }
  // The ATen sequence per cache-sized row block: IVAE_ICNN_CPU_PATH=aten, and the low-rank form
  // (its capacitance adjoint is ATen's batched GEMMs).
  const int64_t blocks = cache_sized_row_blocks(args.batch, logdet_row_bytes(args), kBlockCacheBytes, kMinBlockRows);
  return backward_by_blocks(args.batch, blocks, output_mask[0], [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    return logdet::backward(kCpuKernels, kCpuElementwise, omega.narrow(0, begin, n), rows_of(args, begin, end),
                            saved_c.narrow(2, begin, n), jac_c.narrow(0, begin, n), minv_c.narrow(0, begin, n),
                            output_mask);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CPU, m) {
  m.impl("brenier_logdet", &brenier_logdet_cpu);
  m.impl("brenier_logdet_backward", &brenier_logdet_backward_cpu);
}

}  // namespace ivae::cpu
