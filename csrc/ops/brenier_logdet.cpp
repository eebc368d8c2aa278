#include "ops/brenier_logdet.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cholesky_inverse.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/linalg_cholesky_ex.h>
#include <ATen/ops/logical_and.h>
#include <ATen/ops/min.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "common/scratch.h"

namespace ivae::logdet {
namespace {

// Layer k's block of a [B, d, K*H] Jacobian buffer: [B, d, H], rows K*H apart.
at::Tensor layer_block(const at::Tensor& all, int64_t k, int64_t hidden) {
  return all.narrow(2, k * hidden, hidden);
}

// The same block as a [B*d, H] matrix (a GEMM operand).
at::Tensor layer_rows(const at::Tensor& all, int64_t k, int64_t hidden) {
  return all.view({-1, all.size(2)}).narrow(1, k * hidden, hidden);
}

// Cap⁻¹, the top-left r x r block of a low-rank form's minv.
at::Tensor capacitance_inverse(const at::Tensor& minv, int64_t rank) {
  return minv.narrow(1, 0, rank).narrow(2, 0, rank);
}

bool full_form_requested() {
  const char* form = std::getenv("IVAE_LOGDET_FORM");
  if (form == nullptr || std::string(form) == "auto") return false;
  TORCH_CHECK_VALUE(std::string(form) == "full", "brenier_logdet: the environment variable IVAE_LOGDET_FORM must be ",
                    "'auto' or 'full', got '", form, "'");
  return true;
}

}  // namespace

bool low_rank_form(const IcnnArgs& a) {
  if (2 * a.layers * a.hidden > a.dim || full_form_requested()) return false;
  if (!(a.alpha.item<double>() > 0)) return false;
  // One host read on CUDA for both signs (NaN weights fail the test: the d x d form then runs).
  at::Tensor non_negative = at::min(a.w) >= 0;
  if (a.W.numel() > 0) non_negative = at::logical_and(non_negative, at::min(a.W) >= 0);
  return non_negative.item<bool>();
}

at::Tensor per_sample_columns(const at::Tensor& c) {
  return c.permute({1, 0, 2}).reshape({c.size(1), 1, c.size(0) * c.size(2)});
}

ForwardOutputs allocate_outputs(const IcnnArgs& a, bool keep_for_backward, bool low_rank) {
  const int64_t B = a.batch, d = a.dim, K = a.layers, H = a.hidden, kept = keep_for_backward ? B : 0;
  const auto opts = a.x.options();
  return {at::empty({B}, opts),
          at::empty({B, d}, opts),
          at::empty({B}, opts),
          at::empty({B}, opts.dtype(at::kInt)),
          at::empty({2, K, B, H}, opts),
          at::empty({kept, d, K * H}, opts),
          low_rank ? at::zeros({kept, d, d}, opts) : at::empty({kept, d, d}, opts),
          low_rank};
}

void low_rank_logdet(const at::Tensor& jac, const at::Tensor& c, double alpha, const at::Tensor& logdet,
                     const at::Tensor& info, const at::Tensor& minv) {
  const int64_t B = jac.size(0), d = jac.size(1), r = jac.size(2);
  const at::Tensor scaled = jac * per_sample_columns(c).sqrt();  // Jᵀ C½, [B, d, r]
  at::Tensor cap = at::bmm(scaled.transpose(1, 2), scaled);       // C½ J Jᵀ C½
  cap.diagonal(0, 1, 2).add_(alpha);
  const at::Tensor finite = cap.isfinite().flatten(1).all(-1);
  auto [factor, status] = at::linalg_cholesky_ex(cap);
  status = at::where(finite, status, at::full_like(status, -1));
  const at::Tensor ok = status == 0;
  const at::Tensor value = factor.diagonal(0, 1, 2).log().sum(-1).mul(2).add((d - r) * std::log(alpha));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  logdet.copy_(at::where(ok, value, at::full_like(value, nan)));
  info.copy_(status);
  if (!minv.defined() || B == 0) return;
  // A failed sample's partial factor could be singular: invert the identity there, report NaN.
  const at::Tensor eye = at::eye(r, factor.options()).expand({B, r, r});
  const at::Tensor ok3 = ok.view({B, 1, 1});
  const at::Tensor inverse = at::cholesky_inverse(at::where(ok3, factor, eye));
  capacitance_inverse(minv, r).copy_(at::where(ok3, inverse, at::full_like(inverse, nan)));
}

void forward_into(const Kernels& kernels, const icnn::Elementwise& ew, const IcnnArgs& a,
                  const ForwardOutputs& out) {
  icnn::forward_into(ew, a, out.psi, out.grad, out.saved);  // pre-activations a_k and ψ's sweep s_k
  logdet_into(kernels, ew, a, a.A.transpose(1, 2).contiguous(), out);
}

void logdet_into(const Kernels& kernels, const icnn::Elementwise& ew, const IcnnArgs& a, const at::Tensor& At,
                 const ForwardOutputs& out) {
  const int64_t B = a.batch, d = a.dim, K = a.layers, H = a.hidden;
  Scratch scratch(a.x.options(), {{K, B, H}, {K, B, H}, {K, B, H}, {K, B, H}, {B, d, H}, {B, d, H},
                                  {out.jac.defined() ? 0 : B, d, K * H}});
  at::Tensor z = scratch.take({K, B, H}), d1 = scratch.take({K, B, H}), d2 = scratch.take({K, B, H});
  at::Tensor c = scratch.take({K, B, H});
  at::Tensor next = scratch.take({B, d, H}), gemm = scratch.take({B, d, H});
  at::Tensor jac_spare = scratch.take({out.jac.defined() ? 0 : B, d, K * H});
  const at::Tensor jac = out.jac.defined() ? out.jac : jac_spare;

  ew.softplus_all(out.saved[0], z, d1, d2);
  at::mul_out(c, out.saved[1], d2);  // c_k = s_k ⊙ σ''(a_k)
  for (int64_t k = 0; k < K; ++k) {
    at::Tensor gemm_out;
    if (k > 0) {  // (Jᵀ_{k-1} diag σ'(a_{k-1})) W_kᵀ over all B·d rows
      gemm_out = gemm;
      at::Tensor gemm_2d = gemm.view({B * d, H});
      at::mm_out(gemm_2d, next.view({B * d, H}), a.W[k - 1].t());
    }
    kernels.jacobian_step(gemm_out, At[k], d1[k], layer_block(jac, k, H),
                          k + 1 < K ? next : at::Tensor());
  }
  if (out.low_rank) {
    low_rank_logdet(jac, c, a.alpha.item<double>(), out.logdet, out.info, out.minv);
  } else {
    kernels.hessian_logdet(jac, c, a.alpha, out.logdet, out.info, out.minv);
  }
}

void low_rank_adjoint(const at::Tensor& jac, const at::Tensor& minv, const at::Tensor& grad_logdet,
                      const at::Tensor& c, double alpha, const at::Tensor& p, const at::Tensor& c_bar) {
  const int64_t B = jac.size(0), r = jac.size(2), K = c.size(0), H = c.size(2);
  const at::Tensor columns = per_sample_columns(c);
  const at::Tensor scaled = jac * columns.sqrt();
  const at::Tensor v = at::bmm(capacitance_inverse(minv, r), at::bmm(scaled.transpose(1, 2), jac));
  const at::Tensor P = (jac - at::bmm(scaled, v)) * (grad_logdet / alpha).view({B, 1, 1});
  c_bar.copy_((jac * P).sum(1).view({B, K, H}).permute({1, 0, 2}));
  at::Tensor p_out = p;
  at::mul_out(p_out, P, columns * 2);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const Kernels& kernels, const icnn::Elementwise& ew, const at::Tensor& grad_logdet, const IcnnArgs& a,
    const at::Tensor& saved, const at::Tensor& jac, const at::Tensor& minv, std::array<bool, 6> mask) {
  const int64_t B = a.batch, d = a.dim, K = a.layers, H = a.hidden;
  const auto opts = a.x.options();
  Scratch scratch(opts, {{K, B, H}, {K, B, H}, {K, B, H}, {K, B, H}, {K, B, H}, {K, B, H}, {B, d, K * H},
                         {B, d, H}, {B, d, H}, {B, H}});
  at::Tensor z = scratch.take({K, B, H}), d1 = scratch.take({K, B, H}), d2 = scratch.take({K, B, H});
  at::Tensor c = scratch.take({K, B, H}), c_bar = scratch.take({K, B, H}), a_bar = scratch.take({K, B, H});
  at::Tensor p = scratch.take({B, d, K * H});  // J̄ᵀ
  at::Tensor m_prev = scratch.take({B, d, H}), m_bar = scratch.take({B, d, H});
  at::Tensor g_bar = scratch.take({B, H});
  const at::Tensor s = saved[1];
  ew.softplus_all(saved[0], z, d1, d2);
  at::mul_out(c, s, d2);
  const bool low_rank = low_rank_form(a);
  const double alpha_value = low_rank ? a.alpha.item<double>() : 0.0;  // a host read (CUDA) only when used
  if (low_rank) {
    low_rank_adjoint(jac, minv, grad_logdet.contiguous(), c, alpha_value, p, c_bar);
  } else {
    kernels.hessian_adjoint(jac, minv, grad_logdet.contiguous(), c, p, c_bar);
  }

  at::Tensor A_bar = at::zeros({K, H, d}, opts), W_bar = at::zeros({K - 1, H, H}, opts);
  a_bar.zero_();
  // Reverse through the Jacobian recurrence (layer k's J̄ᵀ is complete when k is reached).
  for (int64_t k = K - 1; k >= 0; --k) {
    const at::Tensor jac_bar_k = layer_block(p, k, H);
    A_bar[k].add_(jac_bar_k.sum(0).t());  // Jᵀ_k = … + A_kᵀ for every sample
    if (k == 0) break;
    at::mul_out(m_prev, layer_block(jac, k - 1, H), d1[k - 1].unsqueeze(1));
    const at::Tensor jac_bar_rows = layer_rows(p, k, H);
    W_bar[k - 1].addmm_(jac_bar_rows.t(), m_prev.view({B * d, H}));
    at::Tensor m_bar_2d = m_bar.view({B * d, H});
    at::mm_out(m_bar_2d, jac_bar_rows, a.W[k - 1]);
    kernels.jacobian_adjoint(m_bar, layer_block(jac, k - 1, H), d1[k - 1], d2[k - 1],
                             layer_block(p, k - 1, H), a_bar[k - 1]);
  }

  at::Tensor s_bar = c;  // c is not needed any more: its buffer takes s̄
  kernels.curvature_adjoint(c_bar, s, d1, d2, s_bar, a_bar);
  // Reverse through ψ's sweep s_{k-1} = (s_k ⊙ σ'(a_k)) W_k, from s_0 upwards; s_{K-1} = w.
  for (int64_t k = 1; k < K; ++k) {
    at::mm_out(g_bar, s_bar[k - 1], a.W[k - 1].t());
    W_bar[k - 1].addmm_((s[k] * d1[k]).t(), s_bar[k - 1]);
    s_bar[k].addcmul_(g_bar, d1[k]);
    a_bar[k].add_(g_bar * s[k] * d2[k]);
  }
  // Reverse through the forward pass a_k = W_k z_{k-1} + A_k x + b_k, z_k = σ(a_k).
  for (int64_t k = K - 1; k >= 1; --k) {
    W_bar[k - 1].addmm_(a_bar[k].t(), z[k - 1]);
    a_bar[k - 1].addcmul_(at::mm(a_bar[k], a.W[k - 1]), d1[k - 1]);
  }

  at::Tensor x_bar, b_bar, w_bar, alpha_bar;
  if (mask[0]) {  // Σ_k ā_k A_k
    x_bar = at::zeros({B, d}, opts);
    for (int64_t k = 0; k < K; ++k) x_bar.addmm_(a_bar[k], a.A[k]);
  }
  if (mask[1]) {
    for (int64_t k = 0; k < K; ++k) A_bar[k].addmm_(a_bar[k].t(), a.x);
  }
  if (mask[2]) b_bar = a_bar.sum(1);
  if (mask[4]) w_bar = s_bar[K - 1].sum(0);
  if (mask[5]) {  // tr(Hess̄) = ω̄ tr(Hess⁻¹)
    const at::Tensor trace =
        low_rank ? capacitance_inverse(minv, K * H).diagonal(0, 1, 2).sum(-1) + double(d - K * H) / alpha_value
                 : minv.diagonal(0, 1, 2).sum(-1);
    alpha_bar = (trace * grad_logdet).sum();
  }
  const auto or_empty = [&](const at::Tensor& t, bool wanted) { return wanted && t.defined() ? t : at::empty({0}, opts); };
  return {or_empty(x_bar, mask[0]), or_empty(A_bar, mask[1]), or_empty(b_bar, mask[2]),
          or_empty(W_bar, mask[3]), or_empty(w_bar, mask[4]), or_empty(alpha_bar, mask[5])};
}

}  // namespace ivae::logdet
