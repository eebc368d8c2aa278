// CUDA kernels of expfam_kl, torch-free (raw pointers), so they can be compiled and run under
// a CPU emulation of CUDA. Per-element math: math/expfam.h, shared with the CPU kernels.
//
// Layout: blocks of 32 x 8 threads; a warp covers 32 consecutive columns of one row (coalesced),
// the 8 warps of a block take rows blockIdx.x*8 + y, stepping by gridDim.x*8; blockIdx.y picks
// the 32-column tile. Reductions (row sums, gradients of broadcast p) go through per-block
// partial sums in a fixed order, so results are deterministic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/broadcast_layout.h"
#include "math/expfam.h"

#include "cuda/launch.cuh"

namespace ivae::cuda {

// Rows (warps) per block. Overridable so an emulator whose warp shuffles are only exact within
// single-warp blocks can run the kernels; 8 on GPUs.
#ifndef IVAE_CUDA_TILE_ROWS
#define IVAE_CUDA_TILE_ROWS 8
#endif
constexpr int kTileCols = 32;  // = warp size: a warp spans one row's 32-column tile
constexpr int kTileRows = IVAE_CUDA_TILE_ROWS;
constexpr int64_t kMaxRowBlocks = 1024;  // bounds the partial-sum buffers

template <typename scalar_t>
struct KlKernelInput {
  int64_t batch, dim;
  const scalar_t* q_loc;        // [B, d]
  const scalar_t* q_log_scale;  // [B, d]
  const scalar_t* p_loc;        // broadcast per p_loc_layout
  const scalar_t* p_log_scale;  // broadcast per p_log_scale_layout
  BroadcastLayout p_loc_layout, p_log_scale_layout;
};

// Gradient of one p parameter: exactly one pointer is set, by p's layout
// (all null when the gradient is not wanted).
template <typename scalar_t, typename acc_t>
struct PGradOut {
  scalar_t* full;         // [B, d]: p is [B, d]
  acc_t* column_partials; // [row_blocks, d]: p shared by all rows
  acc_t* row_partials;    // [col_tiles, B]: p is [B, 1]
};

inline int64_t row_blocks_for(int64_t batch) {
  const int64_t blocks = (batch + kTileRows - 1) / kTileRows;
  return blocks < kMaxRowBlocks ? blocks : kMaxRowBlocks;
}
inline int64_t col_tiles_for(int64_t dim) { return (dim + kTileCols - 1) / kTileCols; }

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t value) {
  for (int offset = kTileCols / 2; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

// Storage type <-> math type. Explicit for 16-bit floats: torch builds with their implicit
// conversions disabled.
template <typename acc_t, typename scalar_t>
struct Convert {
  static __device__ __forceinline__ acc_t in(scalar_t x) { return static_cast<acc_t>(x); }
  static __device__ __forceinline__ scalar_t out(acc_t x) { return static_cast<scalar_t>(x); }
};
template <>
struct Convert<float, __half> {
  static __device__ __forceinline__ float in(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half out(float x) { return __float2half_rn(x); }
};
template <>
struct Convert<float, __nv_bfloat16> {
  static __device__ __forceinline__ float in(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 out(float x) { return __float2bfloat16_rn(x); }
};

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t load(const scalar_t* data, int64_t index) {
  return Convert<acc_t, scalar_t>::in(data[index]);
}

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ void store(scalar_t* data, int64_t index, acc_t value) {
  data[index] = Convert<acc_t, scalar_t>::out(value);
}

__device__ __forceinline__ int64_t p_index(const BroadcastLayout& layout, int64_t i, int64_t j) {
  return i * layout.row_stride + j * layout.col_stride;
}

// out: [B, d] for reduction "none" (else null); row_partials: [col_tiles, B] for "sum" (else null).
template <math::ExpFamily F, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTileCols* kTileRows)
    expfam_kl_forward_kernel(KlKernelInput<scalar_t> in, scalar_t* out, acc_t* row_partials) {
  const int64_t j = static_cast<int64_t>(blockIdx.y) * kTileCols + threadIdx.x;
  const bool column_in_range = j < in.dim;
  const int64_t row_step = static_cast<int64_t>(gridDim.x) * kTileRows;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kTileRows + threadIdx.y; i < in.batch;
       i += row_step) {
    acc_t kl = 0;
    if (column_in_range) {
      const int64_t e = i * in.dim + j;
      kl = math::expfam_kl_value<F>(load<acc_t>(in.q_loc, e), load<acc_t>(in.q_log_scale, e),
                                    load<acc_t>(in.p_loc, p_index(in.p_loc_layout, i, j)),
                                    load<acc_t>(in.p_log_scale, p_index(in.p_log_scale_layout, i, j)));
      if (out != nullptr) store(out, e, kl);
    }
    if (row_partials != nullptr) {
      kl = warp_sum(kl);  // the whole warp is on row i
      if (threadIdx.x == 0) row_partials[blockIdx.y * in.batch + i] = kl;
    }
  }
}

// grad: [B] (grad_per_element false) or [B, d]; g_q_*: [B, d] or null.
template <math::ExpFamily F, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTileCols* kTileRows)
    expfam_kl_backward_kernel(KlKernelInput<scalar_t> in, const scalar_t* grad, bool grad_per_element,
                              scalar_t* g_q_loc, scalar_t* g_q_log_scale,
                              PGradOut<scalar_t, acc_t> g_p_loc, PGradOut<scalar_t, acc_t> g_p_log_scale) {
  __shared__ acc_t column_sums[2][kTileRows][kTileCols];
  const int64_t j = static_cast<int64_t>(blockIdx.y) * kTileCols + threadIdx.x;
  const bool column_in_range = j < in.dim;
  const int64_t row_step = static_cast<int64_t>(gridDim.x) * kTileRows;
  acc_t column_acc[2] = {0, 0};
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kTileRows + threadIdx.y; i < in.batch;
       i += row_step) {
    math::KlGrad<acc_t> d{0, 0, 0, 0};
    if (column_in_range) {
      const int64_t e = i * in.dim + j;
      const int64_t ip = p_index(in.p_loc_layout, i, j);
      const int64_t is = p_index(in.p_log_scale_layout, i, j);
      const acc_t upstream = load<acc_t>(grad, grad_per_element ? e : i);
      d = math::expfam_kl_grad<F>(load<acc_t>(in.q_loc, e), load<acc_t>(in.q_log_scale, e),
                                  load<acc_t>(in.p_loc, ip), load<acc_t>(in.p_log_scale, is), upstream);
      if (g_q_loc != nullptr) store(g_q_loc, e, d.q_loc);
      if (g_q_log_scale != nullptr) store(g_q_log_scale, e, d.q_log_scale);
      if (g_p_loc.full != nullptr) store(g_p_loc.full, e, d.p_loc);
      if (g_p_log_scale.full != nullptr) store(g_p_log_scale.full, e, d.p_log_scale);
    }
    column_acc[0] += d.p_loc;
    column_acc[1] += d.p_log_scale;
    if (g_p_loc.row_partials != nullptr) {
      const acc_t s = warp_sum(d.p_loc);
      if (threadIdx.x == 0) g_p_loc.row_partials[blockIdx.y * in.batch + i] = s;
    }
    if (g_p_log_scale.row_partials != nullptr) {
      const acc_t s = warp_sum(d.p_log_scale);
      if (threadIdx.x == 0) g_p_log_scale.row_partials[blockIdx.y * in.batch + i] = s;
    }
  }
  if (g_p_loc.column_partials == nullptr && g_p_log_scale.column_partials == nullptr) return;
  column_sums[0][threadIdx.y][threadIdx.x] = column_acc[0];
  column_sums[1][threadIdx.y][threadIdx.x] = column_acc[1];
  __syncthreads();
  if (threadIdx.y == 0 && column_in_range) {
    acc_t* partials[2] = {g_p_loc.column_partials, g_p_log_scale.column_partials};
    for (int which = 0; which < 2; ++which) {
      if (partials[which] == nullptr) continue;
      acc_t s = 0;
      for (int y = 0; y < kTileRows; ++y) s += column_sums[which][y][threadIdx.x];
      partials[which][blockIdx.x * in.dim + j] = s;
    }
  }
}

template <typename scalar_t, typename acc_t>
void launch_expfam_kl_forward(math::ExpFamily family, const KlKernelInput<scalar_t>& in,
                              scalar_t* out, acc_t* row_partials, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(row_blocks_for(in.batch)),
                  static_cast<unsigned>(col_tiles_for(in.dim)));
  const dim3 block(kTileCols, kTileRows);
  if (family == math::ExpFamily::Gaussian) {
    IVAE_LAUNCH_KERNEL((expfam_kl_forward_kernel<math::ExpFamily::Gaussian, scalar_t, acc_t>),
                       grid, block, 0, stream, in, out, row_partials);
  } else {
    IVAE_LAUNCH_KERNEL((expfam_kl_forward_kernel<math::ExpFamily::Laplace, scalar_t, acc_t>),
                       grid, block, 0, stream, in, out, row_partials);
  }
}

template <typename scalar_t, typename acc_t>
void launch_expfam_kl_backward(math::ExpFamily family, const KlKernelInput<scalar_t>& in,
                               const scalar_t* grad, bool grad_per_element, scalar_t* g_q_loc,
                               scalar_t* g_q_log_scale, PGradOut<scalar_t, acc_t> g_p_loc,
                               PGradOut<scalar_t, acc_t> g_p_log_scale, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(row_blocks_for(in.batch)),
                  static_cast<unsigned>(col_tiles_for(in.dim)));
  const dim3 block(kTileCols, kTileRows);
  if (family == math::ExpFamily::Gaussian) {
    IVAE_LAUNCH_KERNEL((expfam_kl_backward_kernel<math::ExpFamily::Gaussian, scalar_t, acc_t>),
                       grid, block, 0, stream, in, grad, grad_per_element, g_q_loc, g_q_log_scale,
                       g_p_loc, g_p_log_scale);
  } else {
    IVAE_LAUNCH_KERNEL((expfam_kl_backward_kernel<math::ExpFamily::Laplace, scalar_t, acc_t>),
                       grid, block, 0, stream, in, grad, grad_per_element, g_q_loc, g_q_log_scale,
                       g_p_loc, g_p_log_scale);
  }
}

}  // namespace ivae::cuda
