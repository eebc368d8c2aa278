// Row blocks for the ICNN ops on the CPU: the batch is split into one block per intra-op thread
// and each block runs the op's whole GEMM sequence with single-threaded inner calls. At training
// sizes the ~30 small GEMMs and loops of a call each split over the threads would cost a
// fork/join apiece, and the threads share no data. One block: inner calls run multi-threaded.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/Tensor.h>

#include <ATen/ops/cat.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <vector>

#include "common/icnn_args.h"

namespace ivae::cpu {

constexpr int64_t kMinBlockRows = 64;

inline int64_t row_blocks(int64_t batch) {
  if (at::in_parallel_region()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), batch / kMinBlockRows));
}

// Blocks small enough that one block's temporaries (`bytes_per_row` each row) stay in a core's
// cache (`cache_bytes`), at least one per thread; at most one per `min_rows` rows (below that,
// the per-block cost of the small ATen calls outweighs the cache misses saved).
inline int64_t cache_sized_row_blocks(int64_t batch, int64_t bytes_per_row, int64_t cache_bytes, int64_t min_rows) {
  const int64_t per_thread = row_blocks(batch);
  if (at::in_parallel_region()) return 1;
  const int64_t by_cache = (batch * bytes_per_row + cache_bytes - 1) / std::max<int64_t>(cache_bytes, 1);
  const int64_t most = std::max<int64_t>(1, batch / min_rows);
  const int64_t blocks = std::min(most, std::max(per_thread, by_cache));
  return (blocks + per_thread - 1) / per_thread * per_thread;  // whole rounds over the threads
}

// How many consecutive pieces `rows` rows are cut into so that one piece's temporaries
// (`bytes_per_row` each row) fit in `cache_bytes`, with pieces of at least `min_rows` rows.
inline int64_t cache_blocks(int64_t rows, int64_t bytes_per_row, int64_t cache_bytes, int64_t min_rows) {
  const int64_t by_cache = (rows * bytes_per_row + cache_bytes - 1) / std::max<int64_t>(cache_bytes, 1);
  return std::max<int64_t>(1, std::min(by_cache, rows / std::max<int64_t>(min_rows, 1)));
}

// [begin, end) of block i of n over `rows` rows (sizes differ by at most one).
inline std::pair<int64_t, int64_t> block_rows(int64_t rows, int64_t n, int64_t i) {
  return {rows * i / n, rows * (i + 1) / n};
}

// Runs block(i) for i in [0, blocks) over the intra-op threads, each with the caller's
// thread-local state (dispatch keys: the kernels run below autograd).
template <typename Fn>
void for_each_block(int64_t blocks, const Fn& block) {
  if (blocks == 1) return block(0);  // inline: inner calls keep their own threading
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    const at::ThreadLocalStateGuard guard(caller_state);
    for (int64_t i = first; i < last; ++i) block(i);
  });
}

// The arguments restricted to rows [begin, end) of x.
inline IcnnArgs rows_of(const IcnnArgs& a, int64_t begin, int64_t end) {
  IcnnArgs r = a;
  r.x = a.x.narrow(0, begin, end - begin);
  r.batch = end - begin;
  return r;
}

using SixGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// A backward run per row block: `block_backward(begin, end)` returns (x̄ rows, parameter
// gradients); the x̄ rows are concatenated (if `x_wanted`) and the parameter gradients summed in
// block order, so results are deterministic for a given thread count.
template <typename Fn>
SixGrads backward_by_blocks(int64_t batch, int64_t blocks, bool x_wanted, const Fn& block_backward) {
  std::vector<SixGrads> parts(blocks);
  for_each_block(blocks, [&](int64_t i) {
    const auto [begin, end] = block_rows(batch, blocks, i);
    parts[i] = block_backward(begin, end);
  });
  const auto sum_parts = [&](auto get) {
    at::Tensor total = get(parts[0]).clone();
    for (int64_t i = 1; i < blocks; ++i) total.add_(get(parts[i]));
    return total;
  };
  at::Tensor x_bar = std::get<0>(parts[0]).new_empty({0});
  if (x_wanted) {
    std::vector<at::Tensor> rows;
    for (const auto& p : parts) rows.push_back(std::get<0>(p));
    x_bar = at::cat(rows);
  }
  return {x_bar,
          sum_parts([](const SixGrads& p) { return std::get<1>(p); }),
          sum_parts([](const SixGrads& p) { return std::get<2>(p); }),
          sum_parts([](const SixGrads& p) { return std::get<3>(p); }),
          sum_parts([](const SixGrads& p) { return std::get<4>(p); }),
          sum_parts([](const SixGrads& p) { return std::get<5>(p); })};
}

}  // namespace ivae::cpu
