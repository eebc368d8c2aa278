// CPU kernels of ivae_ext::aggregate_log_q and its backward: the component table, a partition of
// the (code i, component j) grid into tasks fixed by the sizes alone, and the reduction of the
// tasks' partial results in a fixed order, so results do not depend on the thread count.
// Memory: O((B + N)·d) per call (at most kTasks partial copies of the [N, d] gradients); nothing
// of size B·N. Loops: aggregate_log_q_tiles.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "common/aggregate_log_q_args.h"
#include "cpu/aggregate_log_q_tiles.h"

namespace ivae::cpu {
namespace {

using math::ExpFamily;
using math::LogSumExp;

// Tasks: row chunks of at least kMinRows codes, and when there are fewer than kTasks of those
// (small B) column chunks of at least kMinCols components. Fixed by (B, N), not the thread count.
constexpr int64_t kTasks = 16;
constexpr int64_t kMinRows = 16;
constexpr int64_t kMinCols = 512;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Partition {
  int64_t row_chunk, row_chunks, col_chunk, col_chunks;
  int64_t tasks() const { return row_chunks * col_chunks; }
};

Partition partition(int64_t batch, int64_t components) {
  Partition p;
  p.row_chunk = ceil_div(std::max(kMinRows, ceil_div(batch, kTasks)), 4) * 4;
  p.row_chunks = ceil_div(batch, p.row_chunk);
  const int64_t by_rows = kTasks / std::max<int64_t>(p.row_chunks, 1);
  const int64_t by_cols = std::max<int64_t>(1, components / kMinCols);
  p.col_chunk = ceil_div(components, std::clamp<int64_t>(by_rows, 1, by_cols));
  p.col_chunks = ceil_div(components, p.col_chunk);
  return p;
}

double log_norm(ExpFamily family) {
  return family == ExpFamily::Gaussian ? math::component_log_norm<ExpFamily::Gaussian>()
                                       : math::component_log_norm<ExpFamily::Laplace>();
}

// [3, d, N]: loc, e^-ℓ and -ℓ - log_norm, transposed so the loops stream over j.
template <typename T>
at::Tensor build_table(const AggregateLogQArgs& a, ComponentTable<T>& view) {
  const int64_t N = a.components, d = a.dim;
  at::Tensor table = at::empty({3, d, N}, a.q_loc.options());
  T* out = table.mutable_data_ptr<T>();
  const T* loc = a.q_loc.const_data_ptr<T>();
  const T* log_scale = a.q_log_scale.const_data_ptr<T>();
  const T norm = static_cast<T>(log_norm(a.family));
  at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      for (int64_t k = 0; k < d; ++k) {
        const T l = log_scale[j * d + k];
        out[k * N + j] = loc[j * d + k];
        out[(d + k) * N + j] = std::exp(-l);
        out[(2 * d + k) * N + j] = -l - norm;
      }
    }
  });
  view = {N, d, out, out + d * N, out + 2 * d * N};
  return table;
}

template <typename T>
void forward_kernel(const AggregateLogQArgs& a, at::Tensor& log_qz, at::Tensor* marginals) {
  const int64_t B = a.batch, N = a.components, d = a.dim;
  ComponentTable<T> tab;
  const at::Tensor table = build_table<T>(a, tab);
  const Partition p = partition(B, N);
  const LogSumExp<T> empty{static_cast<T>(-INFINITY), T(0)};
  std::vector<LogSumExp<T>> joint(p.col_chunks * B, empty);
  std::vector<LogSumExp<T>> marg(marginals != nullptr ? p.col_chunks * B * d : 0, empty);
  const T* z = a.z.const_data_ptr<T>();
  at::parallel_for(0, p.tasks(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t rc = task / p.col_chunks, cc = task % p.col_chunks;
      const int64_t r0 = rc * p.row_chunk, j0 = cc * p.col_chunk;
      AggregateForwardBlock<T> block{z + r0 * d, std::min(p.row_chunk, B - r0), j0,
                                     std::min(j0 + p.col_chunk, N), joint.data() + cc * B + r0,
                                     marginals != nullptr ? marg.data() + (cc * B + r0) * d : nullptr};
      aggregate_log_q_forward_block(a.family, tab, block);
    }
  });
  // Column chunks merged in order; value = max + log(sum) - log N.
  const T log_n = std::log(static_cast<T>(N));
  auto finish = [&](const std::vector<LogSumExp<T>>& parts, int64_t count, T* out) {
    at::parallel_for(0, count, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        LogSumExp<T> acc = parts[e];
        for (int64_t cc = 1; cc < p.col_chunks; ++cc) math::lse_merge(acc, parts[cc * count + e].max, parts[cc * count + e].sum);
        out[e] = acc.max + std::log(acc.sum) - log_n;
      }
    });
  };
  finish(joint, B, log_qz.mutable_data_ptr<T>());
  if (marginals != nullptr) finish(marg, B * d, marginals->mutable_data_ptr<T>());
}

std::tuple<at::Tensor, at::Tensor> aggregate_log_q_cpu(const at::Tensor& z, const at::Tensor& q_loc,
                                                       const at::Tensor& q_log_scale, c10::string_view family,
                                                       bool with_marginals) {
  const AggregateLogQArgs a = parse_aggregate_log_q_args(z, q_loc, q_log_scale, family);
  at::Tensor log_qz = at::empty({a.batch}, a.z.options());
  at::Tensor marginals = with_marginals ? at::empty({a.batch, a.dim}, a.z.options()) : at::empty({0}, a.z.options());
  if (a.batch > 0) {
    AT_DISPATCH_FLOATING_TYPES(a.z.scalar_type(), "aggregate_log_q_cpu", [&] {
      forward_kernel<scalar_t>(a, log_qz, with_marginals ? &marginals : nullptr);
    });
  }
  return {log_qz, marginals};
}

template <typename T>
std::array<at::Tensor, 3> backward_kernel(const AggregateLogQArgs& a, const AggregateLogQBackwardArgs& g,
                                          std::array<bool, 3> mask) {
  const int64_t B = a.batch, N = a.components, d = a.dim;
  const auto opts = a.z.options();
  const bool want_q = mask[1] || mask[2];
  const bool any_upstream = g.grad_log_qz.defined() || g.grad_log_qz_marginals.defined();
  const Partition p = partition(B, N);
  // Partial sums: grad_z per column chunk, the component gradients per row chunk ([d, N] each).
  at::Tensor grad_z_parts = mask[0] ? at::zeros({p.col_chunks, B, d}, opts) : at::Tensor();
  at::Tensor grad_q_parts = want_q ? at::zeros({std::max<int64_t>(p.row_chunks, 1), 2, d, N}, opts) : at::Tensor();
  if (B > 0 && any_upstream && (mask[0] || want_q)) {
    ComponentTable<T> tab;
    const at::Tensor table = build_table<T>(a, tab);
    const T* z = a.z.const_data_ptr<T>();
    const T* log_qz = g.log_qz.const_data_ptr<T>();
    const T* grad_joint = g.grad_log_qz.defined() ? g.grad_log_qz.const_data_ptr<T>() : nullptr;
    const bool marg = g.grad_log_qz_marginals.defined();
    const T* log_qm = marg ? g.log_qz_marginals.const_data_ptr<T>() : nullptr;
    const T* grad_marg = marg ? g.grad_log_qz_marginals.const_data_ptr<T>() : nullptr;
    T* gz = mask[0] ? grad_z_parts.mutable_data_ptr<T>() : nullptr;
    T* gq = want_q ? grad_q_parts.mutable_data_ptr<T>() : nullptr;
    const T log_n = std::log(static_cast<T>(N));
    at::parallel_for(0, p.tasks(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t rc = task / p.col_chunks, cc = task % p.col_chunks;
        const int64_t r0 = rc * p.row_chunk, j0 = cc * p.col_chunk;
        T* gq_chunk = gq != nullptr ? gq + rc * 2 * d * N : nullptr;
        AggregateBackwardBlock<T> block{z + r0 * d,
                                        std::min(p.row_chunk, B - r0),
                                        j0,
                                        std::min(j0 + p.col_chunk, N),
                                        log_n,
                                        log_qz + r0,
                                        grad_joint != nullptr ? grad_joint + r0 : nullptr,
                                        log_qm != nullptr ? log_qm + r0 * d : nullptr,
                                        grad_marg != nullptr ? grad_marg + r0 * d : nullptr,
                                        gz != nullptr ? gz + (cc * B + r0) * d : nullptr,
                                        mask[1] && gq_chunk != nullptr ? gq_chunk : nullptr,
                                        mask[2] && gq_chunk != nullptr ? gq_chunk + d * N : nullptr};
        aggregate_log_q_backward_block(a.family, tab, block);
      }
    });
  }
  std::array<at::Tensor, 3> grads;
  auto none = [&] { return at::empty({0}, opts); };  // one each: outputs must not alias
  grads[0] = mask[0] ? (p.col_chunks == 1 ? grad_z_parts.select(0, 0) : at::sum(grad_z_parts, {0})) : none();
  if (want_q) {
    const at::Tensor total = grad_q_parts.size(0) == 1 ? grad_q_parts.select(0, 0) : at::sum(grad_q_parts, {0});
    grads[1] = mask[1] ? total.select(0, 0).t().contiguous() : none();
    grads[2] = mask[2] ? total.select(0, 1).t().contiguous() : none();
  } else {
    grads[1] = none();
    grads[2] = none();
  }
  return grads;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> aggregate_log_q_backward_cpu(
    const std::optional<at::Tensor>& grad_log_qz, const std::optional<at::Tensor>& grad_log_qz_marginals,
    const at::Tensor& z, const at::Tensor& q_loc, const at::Tensor& q_log_scale, const at::Tensor& log_qz,
    const at::Tensor& log_qz_marginals, c10::string_view family, std::array<bool, 3> output_mask) {
  const AggregateLogQArgs a = parse_aggregate_log_q_args(z, q_loc, q_log_scale, family);
  const AggregateLogQBackwardArgs g =
      parse_aggregate_log_q_backward_args(grad_log_qz, grad_log_qz_marginals, log_qz, log_qz_marginals, a);
  std::array<at::Tensor, 3> grads;
  AT_DISPATCH_FLOATING_TYPES(a.z.scalar_type(), "aggregate_log_q_backward_cpu",
                             [&] { grads = backward_kernel<scalar_t>(a, g, output_mask); });
  return {grads[0], grads[1], grads[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CPU, m) {
  m.impl("aggregate_log_q", &aggregate_log_q_cpu);
  m.impl("aggregate_log_q_backward", &aggregate_log_q_backward_cpu);
}

}  // namespace ivae::cpu
