// CUDA kernels for the ICNN map's fused elementwise steps, torch-free (raw pointers) so they can
// run under a CPU emulation of CUDA. Math: math/icnn.h, shared with the CPU loops. Row-major
// [rows, H] blocks; `*_ld` is a row stride (0: one row shared by all rows).
#pragma once

#include <cstdint>

#include "cuda/launch.cuh"
#include "math/icnn.h"

namespace ivae::cuda::icnn {

template <typename T>
__global__ void layer_forward_kernel(int64_t rows, int64_t hidden, const T* t, int64_t t_ld,
                                     const T* bias, T* a, T* z, T* d1) {
  IVAE_GRID_STRIDE(e, rows * hidden) {
    const int64_t r = e / hidden, h = e - r * hidden;
    const math::IcnnLayerForward<T> f = math::icnn_layer_forward(t[r * t_ld + h], bias[h]);
    a[e] = f.a;
    z[e] = f.z;
    d1[e] = f.d1;
  }
}

template <typename T>
__global__ void softplus_all_kernel(int64_t n, const T* a, T* z, T* d1, T* d2) {
  IVAE_GRID_STRIDE(e, n) {
    const math::SoftplusParts<T> s = math::softplus_parts(a[e]);
    z[e] = s.value;
    d1[e] = s.d1;
    d2[e] = s.d2;
  }
}

template <typename T>
__global__ void layer_adjoint_kernel(int64_t rows, int64_t hidden, const T* zdot_bar, int64_t zdot_bar_ld,
                                     const T* z_bar, int64_t z_bar_ld, const T* adot, int64_t adot_ld,
                                     const T* d1, const T* d2, T* adot_bar, int64_t adot_bar_ld,
                                     T* a_bar, int64_t a_bar_ld) {
  IVAE_GRID_STRIDE(e, rows * hidden) {
    const int64_t r = e / hidden, h = e - r * hidden;
    const math::IcnnLayerAdjoint<T> j = math::icnn_layer_adjoint(
        zdot_bar[r * zdot_bar_ld + h], z_bar[r * z_bar_ld + h], adot[r * adot_ld + h], d1[e], d2[e]);
    adot_bar[r * adot_bar_ld + h] = j.adot_bar;
    a_bar[r * a_bar_ld + h] = j.a_bar;
  }
}

// One warp per row: psi[r] = z_r·w + ½α‖x_r‖², g_r = w ⊙ d1_r.
template <typename T>
__global__ void top_forward_kernel(int64_t rows, int64_t hidden, int64_t dim, const T* z, const T* d1,
                                   const T* w, const T* x, const T* alpha, T* psi, T* g, int64_t g_ld) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
    T potential = 0, square = 0;
    for (int64_t h = lane; h < hidden; h += 32) {
      potential += z[r * hidden + h] * w[h];
      g[r * g_ld + h] = w[h] * d1[r * hidden + h];
    }
    for (int64_t j = lane; j < dim; j += 32) square += x[r * dim + j] * x[r * dim + j];
    for (int offset = 16; offset > 0; offset /= 2) {
      potential += __shfl_down_sync(0xffffffffu, potential, offset);
      square += __shfl_down_sync(0xffffffffu, square, offset);
    }
    if (lane == 0) psi[r] = potential + (alpha[0] == T(0) ? T(0) : T(0.5) * alpha[0] * square);  // α = 0: no 0·inf
  }
}

template <typename T>
void launch_layer_forward(int64_t rows, int64_t hidden, const T* t, int64_t t_ld, const T* bias, T* a,
                          T* z, T* d1, cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(layer_forward_kernel<T>, blocks_for(rows * hidden), kThreads, 0, stream, rows,
                     hidden, t, t_ld, bias, a, z, d1);
}

template <typename T>
void launch_softplus_all(int64_t n, const T* a, T* z, T* d1, T* d2, cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(softplus_all_kernel<T>, blocks_for(n), kThreads, 0, stream, n, a, z, d1, d2);
}

template <typename T>
void launch_layer_adjoint(int64_t rows, int64_t hidden, const T* zdot_bar, int64_t zdot_bar_ld,
                          const T* z_bar, int64_t z_bar_ld, const T* adot, int64_t adot_ld, const T* d1,
                          const T* d2, T* adot_bar, int64_t adot_bar_ld, T* a_bar, int64_t a_bar_ld,
                          cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(layer_adjoint_kernel<T>, blocks_for(rows * hidden), kThreads, 0, stream, rows,
                     hidden, zdot_bar, zdot_bar_ld, z_bar, z_bar_ld, adot, adot_ld, d1, d2, adot_bar,
                     adot_bar_ld, a_bar, a_bar_ld);
}

template <typename T>
void launch_top_forward(int64_t rows, int64_t hidden, int64_t dim, const T* z, const T* d1, const T* w,
                        const T* x, const T* alpha, T* psi, T* g, int64_t g_ld, cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(top_forward_kernel<T>, blocks_for(rows * 32), kThreads, 0, stream, rows, hidden,
                     dim, z, d1, w, x, alpha, psi, g, g_ld);
}

}  // namespace ivae::cuda::icnn
