// CUDA kernels of aggregate_log_q and its backward (DESIGN.md op 4), torch-free (raw pointers) so
// they can run under a CPU emulation of CUDA. Per-pair math: math/aggregate_log_q.h, shared with
// the CPU loops (cpu/aggregate_log_q_tiles.cpp).
//
// Layout. Every kernel gives one thread one "owner" and streams the other axis past it in tiles
// of kTile entries held in shared memory, kDimChunk dimensions at a time (so d is unbounded):
//   forward / grad_z: a thread owns a code row i (blocks of kBlockThreads rows, blockIdx.x) and
//     streams the components j of one column chunk (blockIdx.y); the component tile (loc, e^-ℓ,
//     -ℓ - log_norm) is computed from q_loc / q_log_scale while loading it, so there is no table.
//   grad_q: a thread owns a component j and streams the codes i of one row chunk (blockIdx.y);
//     the code tile holds z (and, with marginal gradients, their upstream gradient and shift).
// The chunk count is fixed by (B, N) alone (not the device), and each chunk writes its own
// partial results: the forward (max, sum) logsumexp states, [chunks, B] and [chunks, d, B]; the
// backward gradient sums, [chunks, d, B] and [chunks, d, N]. Small kernels then merge the chunks
// in index order. No atomics and no warp shuffles: results are deterministic (bitwise, run to
// run) and do not depend on the warp size. Memory: O(chunks (B + N) d), chunks <= kMaxChunks;
// nothing of size B·N.
// The backward recomputes the softmax weights from the forward's outputs, as the CPU kernels do:
// w_ij = e^(Σ_k log q_ijk - log N - log_qz_i), m_ijk = e^(log q_ijk - log N - log_qz_marginals_ik).
//
// Status: compiled for sm_80 here, and executed only under a CPU emulation of CUDA (HIP-CPU),
// never on a GPU. Expect correct results matching the CPU op to rounding; the speed is
// untuned (one thread per owner, a register tile of kTile partial sums, no tensor cores).
#pragma once

#include <cmath>
#include <cstdint>

#include "cuda/launch.cuh"
#include "math/aggregate_log_q.h"

namespace ivae::cuda::aggregate {

// Warps per block. Overridable (as for expfam_kl) so an emulator can run small blocks; these
// kernels synchronise only with __syncthreads, so any value is correct. 8 on GPUs.
#ifndef IVAE_CUDA_TILE_ROWS
#define IVAE_CUDA_TILE_ROWS 8
#endif
constexpr int kBlockThreads = 32 * IVAE_CUDA_TILE_ROWS;  // owners (rows or components) per block
constexpr int kTile = 32;       // streamed entries per shared-memory tile (a register array each)
constexpr int kDimChunk = 32;   // dimensions per shared-memory tile
constexpr int kPad = kTile + 1; // shared rows padded against bank conflicts on the transposed store
constexpr int64_t kTargetBlocks = 256;  // blocks wanted in flight: owner blocks x chunks
constexpr int64_t kMinChunk = 128;      // streamed entries per chunk, at least
constexpr int64_t kMaxChunks = 64;      // bounds the partial buffers (and gridDim.y)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Owners in blocks of kBlockThreads; the streamed axis in `chunks` chunks of `chunk` entries
// (a multiple of kTile). Depends on the sizes alone, so results do not depend on the device.
struct Split {
  int64_t blocks, chunk, chunks;
};

inline Split split_for(int64_t owners, int64_t streamed) {
  Split s;
  s.blocks = ceil_div(owners, kBlockThreads);
  if (s.blocks < 1) s.blocks = 1;
  int64_t chunks = ceil_div(kTargetBlocks, s.blocks);
  const int64_t by_size = streamed / kMinChunk;
  if (chunks > by_size) chunks = by_size;
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  if (chunks < 1) chunks = 1;
  s.chunk = ceil_div(ceil_div(streamed > 0 ? streamed : 1, chunks), kTile) * kTile;
  s.chunks = ceil_div(streamed > 0 ? streamed : 1, s.chunk);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Device helpers

template <typename T>
__device__ __forceinline__ T exact_exp(T x) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return expf(x);
  } else {
    return exp(x);
  }
}

template <typename T>
__device__ __forceinline__ T exact_log(T x) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return logf(x);
  } else {
    return log(x);
  }
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// One component's stored form (math/aggregate_log_q.h): loc, e^-ℓ and -ℓ - log_norm.
template <math::ExpFamily F, typename T>
__device__ __forceinline__ void load_component(const T* q_loc, const T* q_log_scale, int64_t e,
                                               T& loc, T& inv_scale, T& offset) {
  const T l = q_log_scale[e];
  loc = q_loc[e];
  inv_scale = exact_exp(-l);
  offset = -l - static_cast<T>(math::component_log_norm<F>());
}

// Components [j0, j0 + n) x dims [k0, k0 + kc) into shared memory, entry (kk, jj) = (k0 + kk, j0 + jj).
template <math::ExpFamily F, typename T>
__device__ __forceinline__ void load_component_tile(const T* q_loc, const T* q_log_scale, int64_t dim,
                                                    int64_t j0, int n, int64_t k0, int kc,
                                                    T (*loc)[kPad], T (*inv_scale)[kPad],
                                                    T (*offset)[kPad]) {
  for (int e = threadIdx.x; e < n * kc; e += blockDim.x) {
    const int jj = e / kc, kk = e - jj * kc;
    load_component<F>(q_loc, q_log_scale, (j0 + jj) * dim + k0 + kk, loc[kk][jj], inv_scale[kk][jj],
                      offset[kk][jj]);
  }
}

// Merges the logsumexp of v[0..n) into acc, as the CPU's merge_tile: the tile's max, then one
// exp per value. A tile of only -inf adds nothing; a NaN stays visible in the sum.
template <typename T>
__device__ __forceinline__ void merge_tile(const T (&v)[kTile], int n, math::LogSumExp<T>& acc) {
  T m = -INFINITY;
#pragma unroll
  for (int jj = 0; jj < kTile; ++jj) {
    if (jj < n) m = v[jj] > m ? v[jj] : m;
  }
  if (!(m > -INFINITY)) {
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) {
      if (jj < n && v[jj] != v[jj]) acc.sum = v[jj];
    }
    return;
  }
  T s = 0;
#pragma unroll
  for (int jj = 0; jj < kTile; ++jj) {
    if (jj < n) s += math::simd_exp_bounded(v[jj] - m);
  }
  math::lse_merge(acc, m, s);
}

// ---------------------------------------------------------------------------------------------
// Forward

template <typename T>
struct ForwardParams {
  int64_t batch, components, dim;  // B, N, d
  const T* z;                      // [B, d]
  const T* q_loc;                  // [N, d]
  const T* q_log_scale;            // [N, d]
  int64_t col_chunk;               // components per blockIdx.y
  math::LogSumExp<T>* joint_parts;     // [chunks, B]
  math::LogSumExp<T>* marginal_parts;  // [chunks, d, B] (kMarginals)
};

// Thread = code row; blockIdx.y = column chunk. Per component tile: the joint's Σ_k log q in
// registers (summed over k in order, as on the CPU), the marginal states in the thread's own
// slots of marginal_parts (coalesced across the block's rows).
template <math::ExpFamily F, bool kMarginals, typename T>
__global__ void __launch_bounds__(kBlockThreads) aggregate_forward_partial_kernel(ForwardParams<T> p) {
  __shared__ T s_loc[kDimChunk][kPad];
  __shared__ T s_inv[kDimChunk][kPad];
  __shared__ T s_off[kDimChunk][kPad];
  const int64_t B = p.batch, N = p.components, d = p.dim;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x;
  const bool active = row < B;
  const int64_t j_begin = static_cast<int64_t>(blockIdx.y) * p.col_chunk;
  const int64_t j_end = min64(j_begin + p.col_chunk, N);
  const T* z = p.z + row * d;
  math::LogSumExp<T>* marg = kMarginals ? p.marginal_parts + static_cast<int64_t>(blockIdx.y) * d * B + row : nullptr;
  math::LogSumExp<T> joint{static_cast<T>(-INFINITY), T(0)};
  if (kMarginals && active) {
    for (int64_t k = 0; k < d; ++k) marg[k * B] = joint;
  }
  for (int64_t jt = j_begin; jt < j_end; jt += kTile) {
    const int n = static_cast<int>(min64(kTile, j_end - jt));
    T total[kTile];
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) total[jj] = 0;
    for (int64_t k0 = 0; k0 < d; k0 += kDimChunk) {
      const int kc = static_cast<int>(min64(kDimChunk, d - k0));
      __syncthreads();  // the previous tile is read
      load_component_tile<F>(p.q_loc, p.q_log_scale, d, jt, n, k0, kc, s_loc, s_inv, s_off);
      __syncthreads();
      if (!active) continue;
      for (int kk = 0; kk < kc; ++kk) {
        const T zk = z[k0 + kk];
        T value[kTile];
#pragma unroll
        for (int jj = 0; jj < kTile; ++jj) {
          value[jj] = 0;
          if (jj < n) {
            value[jj] = math::component_log_density<F>(zk, s_loc[kk][jj], s_inv[kk][jj], s_off[kk][jj]);
            total[jj] += value[jj];
          }
        }
        if constexpr (kMarginals) {
          math::LogSumExp<T> m = marg[(k0 + kk) * B];
          merge_tile(value, n, m);
          marg[(k0 + kk) * B] = m;
        }
      }
    }
    if (active) merge_tile(total, n, joint);
  }
  if (active) p.joint_parts[static_cast<int64_t>(blockIdx.y) * B + row] = joint;
}

// out[r, k] = logsumexp over chunks c of parts[c, k, r] (merged in order c = 0, 1, ...) - log N.
template <typename T>
__global__ void aggregate_forward_finish_kernel(int64_t chunks, int64_t rows, int64_t cols,
                                                const math::LogSumExp<T>* parts, T log_n, T* out) {
  IVAE_GRID_STRIDE(o, rows * cols) {
    const int64_t r = o / cols, k = o - r * cols;
    math::LogSumExp<T> acc = parts[k * rows + r];
    for (int64_t c = 1; c < chunks; ++c) {
      const math::LogSumExp<T> part = parts[(c * cols + k) * rows + r];
      math::lse_merge(acc, part.max, part.sum);
    }
    out[o] = acc.max + exact_log(acc.sum) - log_n;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

template <typename T>
struct BackwardParams {
  int64_t batch, components, dim;  // B, N, d
  const T* z;                      // [B, d]
  const T* q_loc;                  // [N, d]
  const T* q_log_scale;            // [N, d]
  T log_components;                // log N
  const T* log_qz;                 // [B]
  const T* grad_log_qz;            // [B] (kJoint)
  const T* log_qz_marginals;       // [B, d] (kMarginals)
  const T* grad_marginals;         // [B, d] (kMarginals)
  int64_t chunk;                   // streamed entries per blockIdx.y
};

// Thread = code row i; blockIdx.y = column chunk. Per component tile: first the joint weights
// g_i w_ij over all k (kJoint), then per k the sum over the tile of c_ijk ∂log q/∂z into the
// thread's slot of grad_z_parts [chunks, d, B].
template <math::ExpFamily F, bool kJoint, bool kMarginals, typename T>
__global__ void __launch_bounds__(kBlockThreads)
    aggregate_grad_z_partial_kernel(BackwardParams<T> p, T* grad_z_parts) {
  __shared__ T s_loc[kDimChunk][kPad];
  __shared__ T s_inv[kDimChunk][kPad];
  __shared__ T s_off[kDimChunk][kPad];
  const int64_t B = p.batch, N = p.components, d = p.dim;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x;
  const bool active = row < B;
  const int64_t j_begin = static_cast<int64_t>(blockIdx.y) * p.chunk;
  const int64_t j_end = min64(j_begin + p.chunk, N);
  const T* z = p.z + row * d;
  T* gz = grad_z_parts + static_cast<int64_t>(blockIdx.y) * d * B + row;
  if (active) {
    for (int64_t k = 0; k < d; ++k) gz[k * B] = 0;
  }
  const T joint_shift = kJoint && active ? p.log_components + p.log_qz[row] : T(0);
  const T upstream = kJoint && active ? p.grad_log_qz[row] : T(0);
  for (int64_t jt = j_begin; jt < j_end; jt += kTile) {
    const int n = static_cast<int>(min64(kTile, j_end - jt));
    T weight[kTile];  // g_i w_ij
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) weight[jj] = 0;
    int64_t loaded = -1;  // first dimension of the tile in shared memory (uniform over the block)
    if constexpr (kJoint) {
      for (int64_t k0 = 0; k0 < d; k0 += kDimChunk) {
        const int kc = static_cast<int>(min64(kDimChunk, d - k0));
        __syncthreads();
        load_component_tile<F>(p.q_loc, p.q_log_scale, d, jt, n, k0, kc, s_loc, s_inv, s_off);
        __syncthreads();
        loaded = k0;
        if (!active) continue;
        for (int kk = 0; kk < kc; ++kk) {
          const T zk = z[k0 + kk];
#pragma unroll
          for (int jj = 0; jj < kTile; ++jj) {
            if (jj < n) weight[jj] += math::component_log_density<F>(zk, s_loc[kk][jj], s_inv[kk][jj], s_off[kk][jj]);
          }
        }
      }
#pragma unroll
      for (int jj = 0; jj < kTile; ++jj) {
        weight[jj] = jj < n && active ? upstream * math::simd_exp_bounded(weight[jj] - joint_shift) : T(0);
      }
    }
    for (int64_t k0 = 0; k0 < d; k0 += kDimChunk) {
      const int kc = static_cast<int>(min64(kDimChunk, d - k0));
      if (loaded != k0) {  // reloaded unless d fits one chunk and the joint pass left it there
        __syncthreads();
        load_component_tile<F>(p.q_loc, p.q_log_scale, d, jt, n, k0, kc, s_loc, s_inv, s_off);
        __syncthreads();
        loaded = k0;
      }
      if (!active) continue;
      for (int kk = 0; kk < kc; ++kk) {
        const int64_t k = k0 + kk;
        const T zk = z[k];
        T grad_marginal = 0, marginal_shift = 0;
        if constexpr (kMarginals) {
          grad_marginal = p.grad_marginals[row * d + k];
          marginal_shift = p.log_components + p.log_qz_marginals[row * d + k];
        }
        T acc = 0;
#pragma unroll
        for (int jj = 0; jj < kTile; ++jj) {
          if (jj < n) {
            const math::ComponentValueGrad<T> g =
                math::component_log_density_grad<F>(zk, s_loc[kk][jj], s_inv[kk][jj], s_off[kk][jj]);
            T c = kJoint ? weight[jj] : T(0);
            if constexpr (kMarginals) c += grad_marginal * math::simd_exp_bounded(g.value - marginal_shift);
            acc += math::weighted(c, g.d_z);
          }
        }
        gz[k * B] += acc;
      }
    }
  }
}

// Thread = component j; blockIdx.y = row chunk. Per code tile: the joint weights g_i w_ij
// (kJoint; the per-row values are read after the first chunk's load, d >= 1), then per k the sums over the tile of -c_ijk ∂log q/∂z and c_ijk ∂log q/∂ℓ into the
// thread's slots of grad_loc_parts / grad_log_scale_parts [chunks, d, N] (either may be null).
template <math::ExpFamily F, bool kJoint, bool kMarginals, typename T>
__global__ void __launch_bounds__(kBlockThreads)
    aggregate_grad_q_partial_kernel(BackwardParams<T> p, T* grad_loc_parts, T* grad_log_scale_parts) {
  __shared__ T s_z[kDimChunk][kPad];
  __shared__ T s_grad_marginal[kDimChunk][kPad];   // kMarginals
  __shared__ T s_marginal_shift[kDimChunk][kPad];  // log N + log_qz_marginals (kMarginals)
  __shared__ T s_upstream[kTile];                  // grad_log_qz (kJoint)
  __shared__ T s_joint_shift[kTile];               // log N + log_qz (kJoint)
  const int64_t B = p.batch, N = p.components, d = p.dim;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x;
  const bool active = j < N;
  const int64_t i_begin = static_cast<int64_t>(blockIdx.y) * p.chunk;
  const int64_t i_end = min64(i_begin + p.chunk, B);
  const int64_t part = static_cast<int64_t>(blockIdx.y) * d * N + j;
  T* gl = grad_loc_parts != nullptr ? grad_loc_parts + part : nullptr;
  T* gs = grad_log_scale_parts != nullptr ? grad_log_scale_parts + part : nullptr;
  if (active) {
    for (int64_t k = 0; k < d; ++k) {
      if (gl != nullptr) gl[k * N] = 0;
      if (gs != nullptr) gs[k * N] = 0;
    }
  }
  // Codes [i0, i0 + n) x dims [k0, k0 + kc) into shared memory, with the per-row values.
  auto load_code_tile = [&](int64_t i0, int n, int64_t k0, int kc) {
    for (int e = threadIdx.x; e < n * kc; e += blockDim.x) {
      const int ii = e / kc, kk = e - ii * kc;
      const int64_t g = (i0 + ii) * d + k0 + kk;
      s_z[kk][ii] = p.z[g];
      if constexpr (kMarginals) {
        s_grad_marginal[kk][ii] = p.grad_marginals[g];
        s_marginal_shift[kk][ii] = p.log_components + p.log_qz_marginals[g];
      }
    }
    if constexpr (kJoint) {
      for (int ii = threadIdx.x; ii < n; ii += blockDim.x) {
        s_upstream[ii] = p.grad_log_qz[i0 + ii];
        s_joint_shift[ii] = p.log_components + p.log_qz[i0 + ii];
      }
    }
  };
  for (int64_t it = i_begin; it < i_end; it += kTile) {
    const int n = static_cast<int>(min64(kTile, i_end - it));
    T weight[kTile];  // g_i w_ij
#pragma unroll
    for (int ii = 0; ii < kTile; ++ii) weight[ii] = 0;
    int64_t loaded = -1;
    if constexpr (kJoint) {
      for (int64_t k0 = 0; k0 < d; k0 += kDimChunk) {
        const int kc = static_cast<int>(min64(kDimChunk, d - k0));
        __syncthreads();
        load_code_tile(it, n, k0, kc);
        __syncthreads();
        loaded = k0;
        if (!active) continue;
        for (int kk = 0; kk < kc; ++kk) {
          T loc, inv_scale, offset;
          load_component<F>(p.q_loc, p.q_log_scale, j * d + k0 + kk, loc, inv_scale, offset);
#pragma unroll
          for (int ii = 0; ii < kTile; ++ii) {
            if (ii < n) weight[ii] += math::component_log_density<F>(s_z[kk][ii], loc, inv_scale, offset);
          }
        }
      }
#pragma unroll
      for (int ii = 0; ii < kTile; ++ii) {
        weight[ii] = ii < n && active ? s_upstream[ii] * math::simd_exp_bounded(weight[ii] - s_joint_shift[ii]) : T(0);
      }
    }
    for (int64_t k0 = 0; k0 < d; k0 += kDimChunk) {
      const int kc = static_cast<int>(min64(kDimChunk, d - k0));
      if (loaded != k0) {
        __syncthreads();
        load_code_tile(it, n, k0, kc);
        __syncthreads();
        loaded = k0;
      }
      if (!active) continue;
      for (int kk = 0; kk < kc; ++kk) {
        const int64_t k = k0 + kk;
        T loc, inv_scale, offset;
        load_component<F>(p.q_loc, p.q_log_scale, j * d + k, loc, inv_scale, offset);
        T acc_loc = 0, acc_log_scale = 0;
#pragma unroll
        for (int ii = 0; ii < kTile; ++ii) {
          if (ii < n) {
            const math::ComponentValueGrad<T> g =
                math::component_log_density_grad<F>(s_z[kk][ii], loc, inv_scale, offset);
            T c = kJoint ? weight[ii] : T(0);
            if constexpr (kMarginals) c += s_grad_marginal[kk][ii] * math::simd_exp_bounded(g.value - s_marginal_shift[kk][ii]);
            acc_loc -= math::weighted(c, g.d_z);
            acc_log_scale += math::weighted(c, g.d_log_scale);
          }
        }
        if (gl != nullptr) gl[k * N] += acc_loc;
        if (gs != nullptr) gs[k * N] += acc_log_scale;
      }
    }
  }
}

// out[r, k] = Σ_c parts[c, k, r], summed in order c = 0, 1, ...
template <typename T>
__global__ void aggregate_sum_chunks_kernel(int64_t chunks, int64_t rows, int64_t cols, const T* parts, T* out) {
  IVAE_GRID_STRIDE(o, rows * cols) {
    const int64_t r = o / cols, k = o - r * cols;
    T s = parts[k * rows + r];
    for (int64_t c = 1; c < chunks; ++c) s += parts[(c * cols + k) * rows + r];
    out[o] = s;
  }
}

// ---------------------------------------------------------------------------------------------
// Host launchers (the binding allocates the workspaces these sizes say)

// Forward workspace, in LogSumExp<T> entries.
inline int64_t forward_workspace_entries(int64_t batch, int64_t components, int64_t dim, bool with_marginals) {
  const Split s = split_for(batch, components);
  return s.chunks * batch * (1 + (with_marginals ? dim : 0));
}

// log_qz [B]; marginals [B, d] or null. Requires B >= 1, N >= 1.
template <typename T>
void launch_aggregate_log_q_forward(math::ExpFamily family, int64_t batch, int64_t components, int64_t dim,
                                    const T* z, const T* q_loc, const T* q_log_scale,
                                    math::LogSumExp<T>* workspace, T* log_qz, T* marginals,
                                    cudaStream_t stream) {
  const Split s = split_for(batch, components);
  ForwardParams<T> p{batch, components, dim, z, q_loc, q_log_scale, s.chunk, workspace,
                     marginals != nullptr ? workspace + s.chunks * batch : nullptr};
  const dim3 grid(static_cast<unsigned>(s.blocks), static_cast<unsigned>(s.chunks));
  const dim3 block(kBlockThreads);
  using math::ExpFamily;
  if (family == ExpFamily::Gaussian) {
    if (marginals != nullptr) {
      IVAE_LAUNCH_KERNEL((aggregate_forward_partial_kernel<ExpFamily::Gaussian, true, T>), grid, block, 0, stream, p);
    } else {
      IVAE_LAUNCH_KERNEL((aggregate_forward_partial_kernel<ExpFamily::Gaussian, false, T>), grid, block, 0, stream, p);
    }
  } else {
    if (marginals != nullptr) {
      IVAE_LAUNCH_KERNEL((aggregate_forward_partial_kernel<ExpFamily::Laplace, true, T>), grid, block, 0, stream, p);
    } else {
      IVAE_LAUNCH_KERNEL((aggregate_forward_partial_kernel<ExpFamily::Laplace, false, T>), grid, block, 0, stream, p);
    }
  }
  const T log_n = std::log(static_cast<T>(components));  // as the CPU op
  IVAE_LAUNCH_KERNEL((aggregate_forward_finish_kernel<T>), dim3(blocks_for(batch)), dim3(kThreads), 0, stream,
                     s.chunks, batch, int64_t{1}, p.joint_parts, log_n, log_qz);
  if (marginals != nullptr && dim > 0) {
    IVAE_LAUNCH_KERNEL((aggregate_forward_finish_kernel<T>), dim3(blocks_for(batch * dim)), dim3(kThreads), 0,
                       stream, s.chunks, batch, dim, p.marginal_parts, log_n, marginals);
  }
}

// Backward workspaces, in T entries: grad_z partials and (each wanted) component-gradient partials.
inline int64_t grad_z_workspace_entries(int64_t batch, int64_t components, int64_t dim) {
  return split_for(batch, components).chunks * dim * batch;
}
inline int64_t grad_q_workspace_entries(int64_t batch, int64_t components, int64_t dim) {
  return split_for(components, batch).chunks * dim * components;
}

// The backward's inputs: forward arguments, outputs and upstream gradients. grad_log_qz and
// grad_marginals (with log_qz_marginals) may be null, not both.
template <typename T>
struct BackwardInput {
  int64_t batch, components, dim;
  const T* z;                 // [B, d]
  const T* q_loc;             // [N, d]
  const T* q_log_scale;       // [N, d]
  const T* log_qz;            // [B]
  const T* grad_log_qz;       // [B] or null
  const T* log_qz_marginals;  // [B, d] (read only with grad_marginals)
  const T* grad_marginals;    // [B, d] or null
};

template <math::ExpFamily F, bool kJoint, bool kMarginals, typename T>
void launch_backward_kernels(const BackwardParams<T>& base, T* grad_z, T* grad_loc, T* grad_log_scale,
                             T* z_workspace, T* loc_workspace, T* log_scale_workspace, cudaStream_t stream) {
  const int64_t B = base.batch, N = base.components, d = base.dim;
  if (d == 0) return;  // the gradients are empty
  const dim3 block(kBlockThreads);
  if (grad_z != nullptr) {
    const Split s = split_for(B, N);
    BackwardParams<T> p = base;
    p.chunk = s.chunk;
    IVAE_LAUNCH_KERNEL((aggregate_grad_z_partial_kernel<F, kJoint, kMarginals, T>),
                       dim3(static_cast<unsigned>(s.blocks), static_cast<unsigned>(s.chunks)), block, 0, stream, p,
                       z_workspace);
    IVAE_LAUNCH_KERNEL((aggregate_sum_chunks_kernel<T>), dim3(blocks_for(B * d)), dim3(kThreads), 0, stream,
                       s.chunks, B, d, static_cast<const T*>(z_workspace), grad_z);
  }
  if (grad_loc != nullptr || grad_log_scale != nullptr) {
    const Split s = split_for(N, B);
    BackwardParams<T> p = base;
    p.chunk = s.chunk;
    IVAE_LAUNCH_KERNEL((aggregate_grad_q_partial_kernel<F, kJoint, kMarginals, T>),
                       dim3(static_cast<unsigned>(s.blocks), static_cast<unsigned>(s.chunks)), block, 0, stream, p,
                       grad_loc != nullptr ? loc_workspace : nullptr,
                       grad_log_scale != nullptr ? log_scale_workspace : nullptr);
    if (grad_loc != nullptr) {
      IVAE_LAUNCH_KERNEL((aggregate_sum_chunks_kernel<T>), dim3(blocks_for(N * d)), dim3(kThreads), 0, stream,
                         s.chunks, N, d, static_cast<const T*>(loc_workspace), grad_loc);
    }
    if (grad_log_scale != nullptr) {
      IVAE_LAUNCH_KERNEL((aggregate_sum_chunks_kernel<T>), dim3(blocks_for(N * d)), dim3(kThreads), 0, stream,
                         s.chunks, N, d, static_cast<const T*>(log_scale_workspace), grad_log_scale);
    }
  }
}

template <math::ExpFamily F, typename T>
void launch_backward_family(const BackwardParams<T>& base, T* grad_z, T* grad_loc, T* grad_log_scale,
                            T* z_workspace, T* loc_workspace, T* log_scale_workspace, cudaStream_t stream) {
  const bool joint = base.grad_log_qz != nullptr, marginals = base.grad_marginals != nullptr;
  if (joint && marginals) {
    launch_backward_kernels<F, true, true>(base, grad_z, grad_loc, grad_log_scale, z_workspace, loc_workspace,
                                           log_scale_workspace, stream);
  } else if (joint) {
    launch_backward_kernels<F, true, false>(base, grad_z, grad_loc, grad_log_scale, z_workspace, loc_workspace,
                                            log_scale_workspace, stream);
  } else if (marginals) {
    launch_backward_kernels<F, false, true>(base, grad_z, grad_loc, grad_log_scale, z_workspace, loc_workspace,
                                            log_scale_workspace, stream);
  }
}

// grad_z [B, d], grad_loc / grad_log_scale [N, d]: each null when not wanted, else fully
// written. Workspaces: grad_z_workspace_entries / grad_q_workspace_entries each (null when
// the matching output is null). Requires B >= 1, N >= 1 and at least one upstream gradient.
template <typename T>
void launch_aggregate_log_q_backward(math::ExpFamily family, const BackwardInput<T>& in, T* grad_z, T* grad_loc,
                                     T* grad_log_scale, T* z_workspace, T* loc_workspace, T* log_scale_workspace,
                                     cudaStream_t stream) {
  const BackwardParams<T> base{in.batch,
                               in.components,
                               in.dim,
                               in.z,
                               in.q_loc,
                               in.q_log_scale,
                               std::log(static_cast<T>(in.components)),
                               in.log_qz,
                               in.grad_log_qz,
                               in.log_qz_marginals,
                               in.grad_marginals,
                               0};
  if (family == math::ExpFamily::Gaussian) {
    launch_backward_family<math::ExpFamily::Gaussian>(base, grad_z, grad_loc, grad_log_scale, z_workspace,
                                                      loc_workspace, log_scale_workspace, stream);
  } else {
    launch_backward_family<math::ExpFamily::Laplace>(base, grad_z, grad_loc, grad_log_scale, z_workspace,
                                                     loc_workspace, log_scale_workspace, stream);
  }
}

}  // namespace ivae::cuda::aggregate
