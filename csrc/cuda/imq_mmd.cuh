// CUDA kernels of imq_mmd (DESIGN.md op 5), torch-free (raw pointers) so they can run under a CPU
// emulation of CUDA. Per-pair math: math/imq_kernel.h, shared with the CPU loops
// (cpu/imq_mmd_tiles.cpp).
//
// Layout. One thread owns one row i of the pooled samples z = [x; y] (N = n + m rows; row j is
// x[j] for j < n, else y[j - n]) and streams every other row j past it in tiles of kTile rows
// held in shared memory; tiles never straddle the x/y boundary, so one tile has one pair weight
// and its sums are kept in T and added to the thread's double accumulators once per tile.
//   per_dim: a thread owns (row i, dimension d = blockIdx.y): its value share and its gradient
//     entry grad[i, d] in registers.
//   joint: a thread owns row i: per tile the squared distances to the tile's rows (kDimChunk
//     dimensions of the tile at a time in shared memory), the kernel weights in registers, then
//     per dimension Σ_j w_ij (z_i - z_j) added to its column of a [D, N] double workspace.
// Unlike the CPU loops (i < j only) every ordered pair is visited from both ends: each thread
// writes only its own row, so there are no atomics and the gradients need no reduction. The value
// shares [rows] go through one fixed-order block reduction: results are deterministic (bitwise,
// run to run) and do not depend on the warp size.
// Weights per ordered pair: value v = 1/(n(n-1)) within x, 1/(m(m-1)) within y, -1/(nm) across;
// gradient of row i: 2 v ∂k/∂z_i = -4 v w(r) (z_i - z_j).
//
// Status: compiled here (TORCH_CUDA_ARCH_LIST=8.0;9.0, nvcc 13), never run on a GPU (this machine
// has none). Executed once under a CPU emulation of CUDA (HIP-CPU, launched through
// IVAE_LAUNCH_KERNEL, blocks of 32 and of 256 threads) against a naive double loop: value and
// gradients agreed to 1e-14 in double and 2e-7 in float, per_dim and joint, D up to 37 (two
// dimension chunks), several blocks of rows, either or both gradients. That run is not in CI:
// run the tests on a GPU before relying on these kernels. The speed is untuned (one thread per
// owner, every ordered pair visited twice, double accumulators, scales read from global memory).
#pragma once

#include <cstdint>

#include "cuda/launch.cuh"
#include "math/imq_kernel.h"

namespace ivae::cuda::imq {

#ifndef IVAE_CUDA_TILE_ROWS
#define IVAE_CUDA_TILE_ROWS 8
#endif
constexpr int kBlockThreads = 32 * IVAE_CUDA_TILE_ROWS;  // owners per block
constexpr int kTile = 32;                                 // streamed rows per shared-memory tile
constexpr int kDimChunk = 32;                             // dimensions per shared-memory tile (joint)
constexpr int kPad = kTile + 1;
constexpr int kReduceThreads = 256;

template <typename T>
struct ImqParams {
  int64_t n, m, dim;              // N = n + m
  const T* x;                     // [n, D]
  const T* y;                     // [m, D]
  math::ImqScales<T> scales;      // device pointers
  double value_xx, value_yy, value_xy;  // weights per ordered pair
  T* grad_x;                      // [n, D] or null (not wanted)
  T* grad_y;                      // [m, D] or null
  double* values;                 // [D, N] (per_dim) or [N] (joint): each owner's value share
  double* grad_workspace;         // [D, N] (joint with gradients)
};

template <typename T>
__device__ __forceinline__ T pooled(const ImqParams<T>& p, int64_t row, int64_t d) {
  return row < p.n ? p.x[row * p.dim + d] : p.y[(row - p.n) * p.dim + d];
}

template <typename T>
__device__ __forceinline__ double ordered_pair_weight(const ImqParams<T>& p, int64_t i, int64_t j) {
  const bool xi = i < p.n, xj = j < p.n;
  return xi && xj ? p.value_xx : (!xi && !xj ? p.value_yy : p.value_xy);
}

// End of the streamed tile starting at j0: kTile rows, cut at the x/y boundary.
__device__ __forceinline__ int64_t tile_end(int64_t j0, int64_t n, int64_t N) {
  const int64_t end = j0 + kTile, limit = j0 < n ? n : N;
  return end < limit ? end : limit;
}

// Thread = (row i, dimension d). Value share -> values[d * N + i]; gradient -> grad_x / grad_y.
template <bool kGrad, typename T>
__global__ void __launch_bounds__(kBlockThreads) imq_per_dim_kernel(ImqParams<T> p) {
  __shared__ T s_z[kTile];
  const int64_t N = p.n + p.m;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x;
  const bool active = i < N;
  T* grad_row = nullptr;
  if (kGrad && active) grad_row = i < p.n ? (p.grad_x != nullptr ? p.grad_x + i * p.dim : nullptr)
                                          : (p.grad_y != nullptr ? p.grad_y + (i - p.n) * p.dim : nullptr);
  for (int64_t d = blockIdx.y; d < p.dim; d += gridDim.y) {
    const T zi = active ? pooled(p, i, d) : T(0);
    double value = 0, grad = 0;
    for (int64_t j0 = 0; j0 < N;) {
      const int64_t j1 = tile_end(j0, p.n, N);
      const int count = static_cast<int>(j1 - j0);
      __syncthreads();  // the previous tile is read
      for (int e = threadIdx.x; e < count; e += blockDim.x) s_z[e] = pooled(p, j0 + e, d);
      __syncthreads();
      if (active) {
        T tile_value = 0, tile_grad = 0;
        for (int jj = 0; jj < count; ++jj) {
          if (j0 + jj == i) continue;
          const T diff = zi - s_z[jj];
          T k, w;
          math::imq_value_weight<kGrad>(diff * diff, p.scales, k, w);
          tile_value += k;
          if constexpr (kGrad) tile_grad += w * diff;
        }
        const double weight = ordered_pair_weight(p, i, j0);
        value += weight * static_cast<double>(tile_value);
        if constexpr (kGrad) grad += -4.0 * weight * static_cast<double>(tile_grad);
      }
      j0 = j1;
    }
    if (active) {
      p.values[d * N + i] = value;
      if (kGrad && grad_row != nullptr) grad_row[d] = static_cast<T>(grad);
    }
  }
}

// Thread = row i. Value share -> values[i]; with kGrad, Σ_j weight · w_ij (z_i - z_j) per
// dimension accumulated in grad_workspace[d * N + i], then written (times -4) to grad_x / grad_y.
template <bool kGrad, typename T>
__global__ void __launch_bounds__(kBlockThreads) imq_joint_kernel(ImqParams<T> p) {
  __shared__ T s_z[kDimChunk][kPad];
  const int64_t N = p.n + p.m, D = p.dim;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x;
  const bool active = i < N;
  const bool row_wants_grad = kGrad && active && (i < p.n ? p.grad_x != nullptr : p.grad_y != nullptr);
  if (row_wants_grad) {
    for (int64_t d = 0; d < D; ++d) p.grad_workspace[d * N + i] = 0;
  }
  auto load_tile = [&](int64_t j0, int count, int64_t k0, int kc) {
    for (int e = threadIdx.x; e < count * kc; e += blockDim.x) {
      const int jj = e / kc, kk = e - jj * kc;
      s_z[kk][jj] = pooled(p, j0 + jj, k0 + kk);
    }
  };
  double value = 0;
  for (int64_t j0 = 0; j0 < N;) {
    const int64_t j1 = tile_end(j0, p.n, N);
    const int count = static_cast<int>(j1 - j0);
    T dist[kTile];
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) dist[jj] = 0;
    int64_t loaded = -1;  // first dimension of the tile in shared memory (uniform over the block)
    for (int64_t k0 = 0; k0 < D; k0 += kDimChunk) {
      const int kc = static_cast<int>(D - k0 < kDimChunk ? D - k0 : kDimChunk);
      __syncthreads();
      load_tile(j0, count, k0, kc);
      __syncthreads();
      loaded = k0;
      if (!active) continue;
      for (int kk = 0; kk < kc; ++kk) {
        const T a = pooled(p, i, k0 + kk);
#pragma unroll
        for (int jj = 0; jj < kTile; ++jj) {
          const T diff = a - s_z[kk][jj];
          if (jj < count) dist[jj] += diff * diff;
        }
      }
    }
    T weight_of[kTile];
    T tile_value = 0;
#pragma unroll
    for (int jj = 0; jj < kTile; ++jj) {
      T k = 0, w = 0;
      if (active && jj < count && j0 + jj != i) math::imq_value_weight<kGrad>(dist[jj], p.scales, k, w);
      tile_value += k;
      weight_of[jj] = w;
    }
    const double weight = active ? ordered_pair_weight(p, i, j0) : 0.0;
    value += weight * static_cast<double>(tile_value);
    if constexpr (kGrad) {
      for (int64_t k0 = 0; k0 < D; k0 += kDimChunk) {
        const int kc = static_cast<int>(D - k0 < kDimChunk ? D - k0 : kDimChunk);
        if (loaded != k0) {  // reloaded unless D fits one chunk and the distance pass left it there
          __syncthreads();
          load_tile(j0, count, k0, kc);
          __syncthreads();
          loaded = k0;
        }
        if (!row_wants_grad) continue;
        for (int kk = 0; kk < kc; ++kk) {
          const T a = pooled(p, i, k0 + kk);
          T acc = 0;
#pragma unroll
          for (int jj = 0; jj < kTile; ++jj) {
            if (jj < count) acc += weight_of[jj] * (a - s_z[kk][jj]);  // past count: unset shared memory
          }
          p.grad_workspace[(k0 + kk) * N + i] += weight * static_cast<double>(acc);
        }
      }
    }
    j0 = j1;
  }
  if (!active) return;
  p.values[i] = value;
  if (row_wants_grad) {
    T* out = i < p.n ? p.grad_x + i * D : p.grad_y + (i - p.n) * D;
    for (int64_t d = 0; d < D; ++d) out[d] = static_cast<T>(-4.0 * p.grad_workspace[d * N + i]);
  }
}

// out[0] = Σ parts[0 .. count), in a fixed order: each thread sums a strided slice, then a tree.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads) imq_sum_kernel(const double* parts, int64_t count, T* out) {
  __shared__ double s_sum[kReduceThreads];
  double s = 0;
  for (int64_t e = threadIdx.x; e < count; e += kReduceThreads) s += parts[e];
  s_sum[threadIdx.x] = s;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) s_sum[threadIdx.x] += s_sum[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = static_cast<T>(s_sum[0]);
}

// ---------------------------------------------------------------------------------------------
// Host launcher

// Workspace entries (double) the launcher needs.
inline int64_t imq_workspace_entries(int64_t n, int64_t m, int64_t dim, bool per_dim, bool with_grad) {
  const int64_t N = n + m;
  return per_dim ? dim * N : N + (with_grad ? dim * N : 0);
}

// value [] (device); grad_x [n, D] / grad_y [m, D] or null. Requires n, m >= 2, D >= 1;
// scale / inv_scale: `count` device values each.
template <typename T>
void launch_imq_mmd(int64_t n, int64_t m, int64_t dim, bool per_dim, const T* x, const T* y, int count,
                    const T* scale, const T* inv_scale, T* value, T* grad_x, T* grad_y, double* workspace,
                    cudaStream_t stream) {
  const int64_t N = n + m;
  const bool with_grad = grad_x != nullptr || grad_y != nullptr;
  const double dn = static_cast<double>(n), dm = static_cast<double>(m);
  // The plain evaluator (one division per scale): `paired` is for the CPU loops.
  ImqParams<T> p{n, m, dim, x, y, {count, scale, inv_scale, false}, 1.0 / (dn * (dn - 1.0)), 1.0 / (dm * (dm - 1.0)),
                 -1.0 / (dn * dm), grad_x, grad_y, workspace, per_dim ? nullptr : workspace + N};
  const unsigned row_blocks = static_cast<unsigned>((N + kBlockThreads - 1) / kBlockThreads);
  if (per_dim) {
    const dim3 grid(row_blocks, static_cast<unsigned>(dim < 65535 ? dim : 65535));
    if (with_grad) {
      IVAE_LAUNCH_KERNEL((imq_per_dim_kernel<true, T>), grid, dim3(kBlockThreads), 0, stream, p);
    } else {
      IVAE_LAUNCH_KERNEL((imq_per_dim_kernel<false, T>), grid, dim3(kBlockThreads), 0, stream, p);
    }
  } else if (with_grad) {
    IVAE_LAUNCH_KERNEL((imq_joint_kernel<true, T>), dim3(row_blocks), dim3(kBlockThreads), 0, stream, p);
  } else {
    IVAE_LAUNCH_KERNEL((imq_joint_kernel<false, T>), dim3(row_blocks), dim3(kBlockThreads), 0, stream, p);
  }
  IVAE_LAUNCH_KERNEL((imq_sum_kernel<T>), dim3(1), dim3(kReduceThreads), 0, stream,
                     static_cast<const double*>(workspace), per_dim ? dim * N : N, value);
}

}  // namespace ivae::cuda::imq
