// CPU binding of ivae_ext::icnn_conjugate_gradient: the tiled per-row solves of
// cpu/icnn_cg_tiled.h, one row block per intra-op thread, every probe in turn.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <ATen/ops/empty.h>

#include "common/icnn_args.h"
#include "cpu/icnn_cg_tiled.h"
#include "cpu/icnn_packing.h"
#include "cpu/row_blocks.h"

namespace ivae::cpu {
namespace {

constexpr const char* kOp = "stochastic_logdet_surrogate";

std::tuple<at::Tensor, at::Tensor, at::Tensor> icnn_conjugate_gradient_cpu(
    const at::Tensor& x, const at::Tensor& A, const at::Tensor& b, const at::Tensor& W, const at::Tensor& w,
    const at::Tensor& alpha, const at::Tensor& saved, const at::Tensor& probes, double tol, int64_t max_iter) {
  const IcnnArgs args = parse_icnn_args(x, A, b, W, w, alpha, kOp);
  TORCH_CHECK_TYPE(args.x.scalar_type() == at::kFloat || args.x.scalar_type() == at::kDouble, kOp,
                   ": the CPU kernels take float32 or float64, got ", args.x.scalar_type());
  const int64_t B = args.batch, d = args.dim, H = args.hidden, K = args.layers;
  TORCH_CHECK(saved.dim() == 4 && saved.size(0) == 2 && saved.size(1) == K && saved.size(2) == B &&
                  saved.size(3) == H && saved.scalar_type() == args.x.scalar_type() && saved.device() == args.x.device(),
              kOp, ": saved must be icnn_map's [2, K, B, H] = [2, ", K, ", ", B, ", ", H, "] of x's dtype, got ",
              saved.sizes());
  TORCH_CHECK(probes.dim() == 3 && probes.size(1) == B && probes.size(2) == d &&
                  probes.scalar_type() == args.x.scalar_type() && probes.device() == args.x.device(),
              kOp, ": probes must be [P, B, d] = [P, ", B, ", ", d, "] of x's dtype, got ", probes.sizes());
  TORCH_CHECK(tol >= 0, kOp, ": tol must be >= 0, got ", tol);
  TORCH_CHECK(max_iter >= 1, kOp, ": max_iter must be >= 1, got ", max_iter);
  const at::Tensor saved_c = saved.contiguous(), v = probes.contiguous();
  const int64_t P = v.size(0);
  at::Tensor u = at::empty(v.sizes(), v.options()), residual = at::empty(v.sizes(), v.options());
  at::Tensor iterations = at::empty({P, B}, v.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(args.x.scalar_type(), "icnn_conjugate_gradient_cpu", [&] {
    const IcnnPacked<scalar_t> packed = pack_args<scalar_t>(args);
    const scalar_t* sa = saved_c.const_data_ptr<scalar_t>();
    const scalar_t* ss = sa + K * B * H;
    const scalar_t* vp = v.const_data_ptr<scalar_t>();
    scalar_t *up = u.mutable_data_ptr<scalar_t>(), *rp = residual.mutable_data_ptr<scalar_t>();
    int32_t* ip = iterations.mutable_data_ptr<int32_t>();
    const int64_t blocks = row_blocks(B);
    for_each_block(blocks, [&](int64_t i) {
      const auto [begin, end] = block_rows(B, blocks, i);
      for (int64_t probe = 0; probe < P; ++probe) {
        const int64_t o = probe * B * d + begin * d;
        icnn_cg_tiled(packed, end - begin, sa + begin * H, ss + begin * H, B * H, vp + o, static_cast<scalar_t>(tol),
                      max_iter, up + o, rp + o, ip + probe * B + begin);
      }
    });
  });
  return {u, residual, iterations};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CPU, m) { m.impl("icnn_conjugate_gradient", &icnn_conjugate_gradient_cpu); }

}  // namespace ivae::cpu
