// CPU kernels of ivae_ext::imq_mmd (value and, in the same pass, the gradients) and the CPU
// registration of imq_mmd_backward. The pooled samples z = [x; y] are cut into row blocks (inside
// x or inside y); a task takes some row blocks (per_dim: of one dimension) and every pair (i, j > i)
// starting in them, with its own value and gradient partial sums, in double. The tasks are fixed by
// the sizes alone and their partials are reduced in task order, so results do not depend on the
// thread count. Memory: O(tasks · (n + m)) per_dim, O(tasks · (n + m) · D) joint, tasks <= 16 for
// joint (and per_dim D · tasks <= max(D, 32)); nothing of size n·m. Loops: imq_mmd_tiles.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>
#include <utility>
#include <vector>

#include "common/imq_mmd_args.h"
#include "cpu/imq_mmd_tiles.h"

namespace ivae::cpu {
namespace {

constexpr int64_t kPerDimTasks = 32;  // per_dim: at least this many (dimension, chunk) tasks when D is small
constexpr int64_t kJointTasks = 16;   // joint: row chunks, each with an [N, D] gradient partial
// Below this many pair-dimensions (about a millisecond on one core) the tasks run on the calling
// thread: waking the pool costs more than it saves, and much more when the other cores are busy.
constexpr int64_t kMinParallelPairDims = int64_t{1} << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Row blocks [begin, end) of the pooled samples, x's then y's, `rows` rows each (the last of each
// sample shorter), in the order [0, R-1, 1, R-2, ...]: the triangle's long and short rows alternate,
// so consecutive blocks in a chunk carry about equal work.
std::vector<std::pair<int64_t, int64_t>> interleaved_blocks(int64_t n, int64_t N, int64_t rows) {
  std::vector<std::pair<int64_t, int64_t>> blocks;
  for (int64_t i = 0; i < n; i += rows) blocks.emplace_back(i, std::min(i + rows, n));
  for (int64_t i = n; i < N; i += rows) blocks.emplace_back(i, std::min(i + rows, N));
  std::vector<std::pair<int64_t, int64_t>> order;
  const int64_t R = static_cast<int64_t>(blocks.size());
  for (int64_t lo = 0, hi = R - 1; lo <= hi; ++lo, --hi) {
    order.push_back(blocks[lo]);
    if (hi != lo) order.push_back(blocks[hi]);
  }
  return order;
}

template <typename T>
std::tuple<at::Tensor, at::Tensor, at::Tensor> imq_mmd_kernel(const ImqMmdArgs& a, std::array<bool, 2> mask) {
  const int64_t n = a.n, m = a.m, N = n + m, D = a.dim;
  const auto opts = a.x.options();
  at::Tensor grad_x = mask[0] ? at::zeros({n, D}, opts) : at::empty({0}, opts);
  at::Tensor grad_y = mask[1] ? at::zeros({m, D}, opts) : at::empty({0}, opts);
  if (D == 0) return {at::zeros({}, opts), grad_x, grad_y};  // no dimensions: the distributions agree

  const at::Tensor z = at::cat({a.x, a.y});  // [N, D]
  const at::Tensor zt = z.t().contiguous();  // [D, N]
  std::vector<T> scale(a.scales.size()), inv_scale(a.scales.size());
  for (size_t s = 0; s < a.scales.size(); ++s) {
    scale[s] = static_cast<T>(a.scales[s]);
    inv_scale[s] = static_cast<T>(1.0 / a.scales[s]);
  }
  ImqProblem<T> p{n,
                  N,
                  D,
                  z.const_data_ptr<T>(),
                  zt.const_data_ptr<T>(),
                  {static_cast<int>(scale.size()), scale.data(), inv_scale.data(),
                   math::imq_pairable<T>(a.scales.data(), static_cast<int>(a.scales.size()))},
                  math::imq_pair_weights(n, m),
                  mask[0],
                  mask[1]};
  const bool want_grad = mask[0] || mask[1];
  const int64_t rows = a.per_dim ? kImqPerDimTile : kImqJointTile;
  const auto blocks = interleaved_blocks(n, N, rows);
  const int64_t R = static_cast<int64_t>(blocks.size());
  const int64_t most_chunks = ceil_div(R, 2);
  const int64_t chunks = a.per_dim ? std::clamp<int64_t>(ceil_div(kPerDimTasks, D), 1, most_chunks)
                                   : std::clamp<int64_t>(kJointTasks, 1, most_chunks);
  const int64_t tasks = a.per_dim ? D * chunks : chunks;
  std::vector<double> values(tasks, 0.0);
  // Gradient partials: per_dim [D, chunks, N] (task t's slice at t·N), joint [chunks, N, D].
  std::vector<double> parts(want_grad ? tasks * N * (a.per_dim ? 1 : D) : 0, 0.0);
  const int64_t pair_dims = (N * (N - 1) / 2) * D;
  const int64_t grain = pair_dims < kMinParallelPairDims ? tasks : 1;  // the same tasks either way
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(a.per_dim ? 0 : D * kImqJointTile);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t chunk = t % chunks;
      double* acc = want_grad ? parts.data() + t * N * (a.per_dim ? 1 : D) : nullptr;
      for (int64_t b = R * chunk / chunks; b < R * (chunk + 1) / chunks; ++b) {
        if (a.per_dim) {
          imq_per_dim_rows(p, t / chunks, blocks[b].first, blocks[b].second, &values[t], acc);
        } else {
          imq_joint_rows(p, blocks[b].first, blocks[b].second, &values[t], acc, scratch.data());
        }
      }
    }
  });
  double value = 0;
  for (double v : values) value += v;
  if (want_grad) {
    T* gx = mask[0] ? grad_x.mutable_data_ptr<T>() : nullptr;
    T* gy = mask[1] ? grad_y.mutable_data_ptr<T>() : nullptr;
    // ∂k/∂z_i = -2 w (z_i - z_j): the partials hold Σ weight · w · (z_i - z_j).
    at::parallel_for(0, N, pair_dims < kMinParallelPairDims ? N : 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T* out = i < n ? (gx != nullptr ? gx + i * D : nullptr) : (gy != nullptr ? gy + (i - n) * D : nullptr);
        if (out == nullptr) continue;
        for (int64_t d = 0; d < D; ++d) {
          double s = 0;
          for (int64_t c = 0; c < chunks; ++c) {
            s += a.per_dim ? parts[(d * chunks + c) * N + i] : parts[(c * N + i) * D + d];
          }
          out[d] = static_cast<T>(-2.0 * s);
        }
      }
    });
  }
  return {at::full({}, value, opts), grad_x, grad_y};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> imq_mmd_cpu(const at::Tensor& x, const at::Tensor& y,
                                                           c10::ArrayRef<double> scales, bool per_dim,
                                                           std::array<bool, 2> output_mask) {
  const ImqMmdArgs a = parse_imq_mmd_args(x, y, scales, per_dim);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "imq_mmd_cpu", [&] { out = imq_mmd_kernel<scalar_t>(a, output_mask); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(ivae_ext, CPU, m) {
  m.impl("imq_mmd", &imq_mmd_cpu);
  m.impl("imq_mmd_backward", &imq_mmd_backward);
}

}  // namespace ivae::cpu
