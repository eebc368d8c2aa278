// CPU binding of ivae_ext::icnn_map: the fused elementwise steps (loops in icnn_rows.cpp,
// parallel over rows) plugged into the shared GEMM sequence of ops/icnn_map.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

#include "common/icnn_args.h"
#include "cpu/icnn_table.h"
#include "cpu/icnn_rows.h"
#include "cpu/icnn_packing.h"
#include "cpu/icnn_partial_grads.h"
#include "cpu/row_blocks.h"
#include "ops/icnn_map.h"

namespace ivae::cpu {
namespace {

constexpr int64_t kTaskElements = 16384;

int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, kTaskElements / std::max<int64_t>(width, 1)); }

void check_cpu_floating(const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                   "icnn_map: the CPU kernels take float32 or float64, got ", t.scalar_type());
}

void layer_forward(const at::Tensor& t, const at::Tensor& bias, const at::Tensor& a,
                   const at::Tensor& z, const at::Tensor& d1) {
  const int64_t rows = t.size(0), hidden = t.size(1);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "icnn_layer_forward", [&] {
    const scalar_t* tp = t.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    scalar_t *ap = a.mutable_data_ptr<scalar_t>(), *zp = z.mutable_data_ptr<scalar_t>(),
             *dp = d1.mutable_data_ptr<scalar_t>();
    const int64_t ld = t.stride(0);
    at::parallel_for(0, rows, grain_rows(hidden), [&](int64_t begin, int64_t end) {
      const int64_t e = begin * hidden;
      icnn_layer_forward_rows(end - begin, hidden, tp + begin * ld, ld, bp, ap + e, zp + e, dp + e);
    });
  });
}

void top_forward(const at::Tensor& z, const at::Tensor& d1, const at::Tensor& w, const at::Tensor& x,
                 const at::Tensor& alpha, const at::Tensor& psi, const at::Tensor& g) {
  const int64_t rows = z.size(0), hidden = z.size(1), dim = x.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "icnn_top_forward", [&] {
    const scalar_t alpha_value = alpha.item<scalar_t>();
    const scalar_t *zp = z.const_data_ptr<scalar_t>(), *dp = d1.const_data_ptr<scalar_t>(),
                   *wp = w.const_data_ptr<scalar_t>(), *xp = x.const_data_ptr<scalar_t>();
    scalar_t *psip = psi.mutable_data_ptr<scalar_t>(), *gp = g.mutable_data_ptr<scalar_t>();
    const int64_t ld = g.stride(0);
    at::parallel_for(0, rows, grain_rows(hidden), [&](int64_t begin, int64_t end) {
      icnn_top_forward_rows(end - begin, hidden, dim, zp + begin * hidden, dp + begin * hidden, wp,
                            xp + begin * dim, alpha_value, psip + begin, gp + begin * ld, ld);
    });
  });
}

void softplus_all(const at::Tensor& a, const at::Tensor& z, const at::Tensor& d1, const at::Tensor& d2) {
  const int64_t layers = a.size(0), per_layer = a.size(1) * a.size(2);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "icnn_softplus_all", [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    scalar_t *zp = z.mutable_data_ptr<scalar_t>(), *p1 = d1.mutable_data_ptr<scalar_t>(),
             *p2 = d2.mutable_data_ptr<scalar_t>();
    const int64_t a_layer_stride = a.stride(0), z_layer_stride = z.stride(0);
    at::parallel_for(0, layers * per_layer, kTaskElements, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {  // split the range at layer boundaries
        const int64_t k = i / per_layer, offset = i - k * per_layer;
        const int64_t n = std::min(end - i, per_layer - offset);
        icnn_softplus_all(n, ap + k * a_layer_stride + offset, zp + k * z_layer_stride + offset, p1 + i, p2 + i);
        i += n;
      }
    });
  });
}

void layer_adjoint(const at::Tensor& zdot_bar, const at::Tensor& z_bar, const at::Tensor& adot,
                   const at::Tensor& d1, const at::Tensor& d2, const at::Tensor& adot_bar,
                   const at::Tensor& a_bar) {
  const int64_t rows = adot.size(0), hidden = adot.size(1);
  AT_DISPATCH_FLOATING_TYPES(adot.scalar_type(), "icnn_layer_adjoint", [&] {
    const scalar_t *zdb = zdot_bar.const_data_ptr<scalar_t>(), *zb = z_bar.const_data_ptr<scalar_t>(),
                   *ad = adot.const_data_ptr<scalar_t>(), *p1 = d1.const_data_ptr<scalar_t>(),
                   *p2 = d2.const_data_ptr<scalar_t>();
    scalar_t *adb = adot_bar.mutable_data_ptr<scalar_t>(), *ab = a_bar.mutable_data_ptr<scalar_t>();
    const int64_t zdb_ld = zdot_bar.stride(0), zb_ld = z_bar.stride(0);
    const int64_t adb_ld = adot_bar.stride(0), ab_ld = a_bar.stride(0), ad_ld = adot.stride(0);
    at::parallel_for(0, rows, grain_rows(hidden), [&](int64_t begin, int64_t end) {
      const int64_t e = begin * hidden;
      icnn_layer_adjoint_rows(end - begin, hidden, zdb + begin * zdb_ld, zdb_ld, zb + begin * zb_ld,
                              zb_ld, ad + begin * ad_ld, ad_ld, p1 + e, p2 + e, adb + begin * adb_ld, adb_ld,
                              ab + begin * ab_ld, ab_ld);
    });
  });
}


}  // namespace

const icnn::Elementwise kCpuElementwise{&layer_forward, &top_forward, &softplus_all, &layer_adjoint};

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> icnn_map_aten_path(const IcnnArgs& args) {
  const int64_t blocks = row_blocks(args.batch);
  if (blocks == 1) return icnn::forward(kCpuElementwise, args);
  const auto opts = args.x.options();
  at::Tensor psi = at::empty({args.batch}, opts), grad = at::empty({args.batch, args.dim}, opts);
  at::Tensor saved = at::empty({2, args.layers, args.batch, args.hidden}, opts);
  for_each_block(blocks, [&](int64_t i) {
    const auto [begin, end] = block_rows(args.batch, blocks, i);
    icnn::forward_into(kCpuElementwise, rows_of(args, begin, end), psi.narrow(0, begin, end - begin),
                       grad.narrow(0, begin, end - begin), saved.narrow(2, begin, end - begin));
  });
  return {psi, grad, saved};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> icnn_map_cpu(const at::Tensor& x, const at::Tensor& A,
                                                            const at::Tensor& b, const at::Tensor& W,
                                                            const at::Tensor& w, const at::Tensor& alpha) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha);
  check_cpu_floating(args.x);
  if (icnn_map_uses_aten_path(args.hidden)) return icnn_map_aten_path(args);
  const auto opts = args.x.options();
  const int64_t B = args.batch, d = args.dim, H = args.hidden;
  at::Tensor psi = at::empty({B}, opts), grad = at::empty({B, d}, opts);
  at::Tensor saved = at::empty({2, args.layers, B, H}, opts);
  AT_DISPATCH_FLOATING_TYPES(args.x.scalar_type(), "icnn_map_cpu", [&] {
    const IcnnPacked<scalar_t> packed = pack_args<scalar_t>(args);
    const scalar_t* xp = args.x.const_data_ptr<scalar_t>();
    scalar_t *psip = psi.mutable_data_ptr<scalar_t>(), *gp = grad.mutable_data_ptr<scalar_t>();
    scalar_t* sa = saved.mutable_data_ptr<scalar_t>();
    scalar_t* ss = sa + args.layers * B * H;
    const int64_t blocks = row_blocks(B);
    for_each_block(blocks, [&](int64_t i) {
      const auto [begin, end] = block_rows(B, blocks, i);
      icnn_tiled_forward(packed, end - begin, xp + begin * d, psip + begin, gp + begin * d, sa + begin * H,
                         ss + begin * H, B * H);
    });
  });
  return {psi, grad, saved};
}

SixGrads icnn_map_backward_aten_path(const at::Tensor& grad_psi, const at::Tensor& grad_grad, const IcnnArgs& args,
                                     const at::Tensor& saved, std::array<bool, 6> output_mask) {
  const int64_t blocks = row_blocks(args.batch);
  if (blocks == 1) return icnn::backward(kCpuElementwise, grad_psi, grad_grad, args, saved, output_mask);
  return backward_by_blocks(args.batch, blocks, output_mask[0], [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    return icnn::backward(kCpuElementwise, grad_psi.narrow(0, begin, n), grad_grad.narrow(0, begin, n),
                          rows_of(args, begin, end), saved.narrow(2, begin, n), output_mask);
  });
}

SixGrads icnn_map_backward_cpu(const at::Tensor& grad_psi, const at::Tensor& grad_grad, const at::Tensor& x,
                               const at::Tensor& A, const at::Tensor& b, const at::Tensor& W, const at::Tensor& w,
                               const at::Tensor& alpha, const at::Tensor& saved, std::array<bool, 6> output_mask) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha);
  check_cpu_floating(args.x);
  check_icnn_backward_args(args, grad_psi, grad_grad, saved);
  const at::Tensor saved_c = saved.contiguous();
  if (icnn_map_uses_aten_path(args.hidden)) return icnn_map_backward_aten_path(grad_psi, grad_grad, args, saved_c, output_mask);
  const at::Tensor psi_bar = grad_psi.contiguous(), g_bar = grad_grad.contiguous();
  const auto opts = args.x.options();
  const int64_t B = args.batch, d = args.dim, H = args.hidden;
  at::Tensor x_bar = output_mask[0] ? at::empty({B, d}, opts) : at::empty({0}, opts);
  at::Tensor A_bar = at::empty({0}, opts), b_bar = A_bar, W_bar = A_bar, w_bar = A_bar, alpha_bar = A_bar;
  AT_DISPATCH_FLOATING_TYPES(args.x.scalar_type(), "icnn_map_backward_cpu", [&] {
    const IcnnPacked<scalar_t> packed = pack_args<scalar_t>(args);
    const scalar_t* xp = args.x.const_data_ptr<scalar_t>();
    const scalar_t *pb = psi_bar.const_data_ptr<scalar_t>(), *gb = g_bar.const_data_ptr<scalar_t>();
    const scalar_t* sa = saved_c.const_data_ptr<scalar_t>();
    const scalar_t* ss = sa + args.layers * B * H;
    scalar_t* xb = output_mask[0] ? x_bar.mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t blocks = row_blocks(B);
    std::vector<IcnnPartial<scalar_t>> parts(blocks);
    for_each_block(blocks, [&](int64_t i) {
      const auto [begin, end] = block_rows(B, blocks, i);
      parts[i] = icnn_partial_for(packed);
      icnn_tiled_backward(packed, end - begin, xp + begin * d, pb + begin, gb + begin * d, sa + begin * H,
                          ss + begin * H, B * H, output_mask, xb ? xb + begin * d : nullptr, parts[i]);
    });
    write_parameter_grads(packed, parts, output_mask, A_bar, b_bar, W_bar, w_bar, alpha_bar);
  });
  return {x_bar, A_bar, b_bar, W_bar, w_bar, alpha_bar};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CPU, m) {
  m.impl("icnn_map", &icnn_map_cpu);
  m.impl("icnn_map_backward", &icnn_map_backward_cpu);
}

}  // namespace ivae::cpu
