// CUDA kernels for the Brenier log-determinant's fused steps, torch-free (raw pointers) so they
// can run under a CPU emulation of CUDA. Math: math/brenier.h and math/cholesky.h, shared with
// the CPU loops (cpu/brenier_rows.cpp). Jacobian blocks hold B·d rows (b, j) of H values spaced
// `ld` apart; [B, H] and [B, d, d] arrays are contiguous.
#pragma once

#include <cstdint>
#include <limits>

#include "cuda/launch.cuh"
#include "math/brenier.h"
#include "math/cholesky.h"

namespace ivae::cuda::logdet {

// One thread per element (b, j, h).
template <typename T>
__global__ void jacobian_step_kernel(int64_t batch, int64_t dim, int64_t hidden, const T* gemm_out,
                                     const T* At_k, const T* d1_k, T* jac, int64_t ld, T* next) {
  IVAE_GRID_STRIDE(e, batch * dim * hidden) {
    const int64_t r = e / hidden, h = e - r * hidden;
    const int64_t b = r / dim, j = r - b * dim;
    const math::JacobianStep<T> s =
        math::jacobian_step(gemm_out ? gemm_out[e] : T(0), At_k[j * hidden + h], d1_k[b * hidden + h]);
    jac[r * ld + h] = s.jac;
    if (next) next[e] = s.next;
  }
}

// One thread per sample (hess = Σ_k Jᵀ_k diag(c_k) J_k from cuBLAS): the d x d factorisation in its own slice of global memory (d is small;
// a GPU-tuned blocked factorisation would share the matrix across a warp).
template <typename T>
__global__ void hessian_logdet_kernel(int64_t batch, int64_t dim, T* hess, const T* alpha, T* logdet,
                                      int32_t* info, T* minv) {
  IVAE_GRID_STRIDE(b, batch) {
    info[b] = math::shifted_logdet_and_inverse(hess + b * dim * dim, dim, alpha[0], logdet + b,
                                               minv ? minv + b * dim * dim : nullptr);
  }
}

// One thread per (b, h), looping over the sample's d rows.
template <typename T>
__global__ void hessian_adjoint_kernel(int64_t batch, int64_t dim, int64_t hidden, const T* jac, T* p,
                                       int64_t ld, const T* c_k, T* c_bar_k) {
  IVAE_GRID_STRIDE(e, batch * hidden) {
    const int64_t b = e / hidden, h = e - b * hidden;
    const T c = c_k[e];
    T c_bar = 0;
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t i = (b * dim + j) * ld + h;
      const math::HessianAdjoint<T> a = math::hessian_adjoint(jac[i], p[i], c);
      c_bar += a.c_bar_term;
      p[i] = a.jac_bar;
    }
    c_bar_k[e] = c_bar;
  }
}

template <typename T>
__global__ void curvature_adjoint_kernel(int64_t n, const T* c_bar, const T* s, const T* d1, const T* d2, T* s_bar,
                                         T* a_bar) {
  IVAE_GRID_STRIDE(e, n) {
    const math::CurvatureAdjoint<T> r = math::curvature_adjoint(c_bar[e], s[e], d1[e], d2[e]);
    s_bar[e] = r.s_bar;
    a_bar[e] += r.a_bar_add;
  }
}

template <typename T>
__global__ void jacobian_adjoint_kernel(int64_t batch, int64_t dim, int64_t hidden, const T* m_bar,
                                        const T* jac_prev, T* jac_bar_prev, int64_t ld, const T* d1_prev,
                                        const T* d2_prev, T* a_bar_prev) {
  IVAE_GRID_STRIDE(e, batch * hidden) {
    const int64_t b = e / hidden, h = e - b * hidden;
    const T d1 = d1_prev[e];
    T sum = 0;
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t r = b * dim + j;
      const math::JacobianAdjoint<T> a = math::jacobian_adjoint(m_bar[r * hidden + h], jac_prev[r * ld + h], d1);
      jac_bar_prev[r * ld + h] += a.jac_bar_add;
      sum += a.a_bar_term;
    }
    a_bar_prev[e] += d2_prev[e] * sum;
  }
}

template <typename T>
void launch_jacobian_step(int64_t batch, int64_t dim, int64_t hidden, const T* gemm_out, const T* At_k,
                          const T* d1_k, T* jac, int64_t ld, T* next, cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(jacobian_step_kernel<T>, blocks_for(batch * dim * hidden), kThreads, 0, stream, batch,
                     dim, hidden, gemm_out, At_k, d1_k, jac, ld, next);
}

template <typename T>
void launch_hessian_logdet(int64_t batch, int64_t dim, T* hess, const T* alpha, T* logdet, int32_t* info,
                           T* minv, cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(hessian_logdet_kernel<T>, blocks_for(batch), kThreads, 0, stream, batch, dim, hess,
                     alpha, logdet, info, minv);
}

template <typename T>
void launch_hessian_adjoint(int64_t batch, int64_t dim, int64_t hidden, const T* jac, T* p, int64_t ld,
                            const T* c_k, T* c_bar_k, cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(hessian_adjoint_kernel<T>, blocks_for(batch * hidden), kThreads, 0, stream, batch, dim,
                     hidden, jac, p, ld, c_k, c_bar_k);
}

template <typename T>
void launch_curvature_adjoint(int64_t n, const T* c_bar, const T* s, const T* d1, const T* d2, T* s_bar, T* a_bar,
                              cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(curvature_adjoint_kernel<T>, blocks_for(n), kThreads, 0, stream, n, c_bar, s, d1, d2, s_bar,
                     a_bar);
}

template <typename T>
void launch_jacobian_adjoint(int64_t batch, int64_t dim, int64_t hidden, const T* m_bar, const T* jac_prev,
                             T* jac_bar_prev, int64_t ld, const T* d1_prev, const T* d2_prev, T* a_bar_prev,
                             cudaStream_t stream) {
  IVAE_LAUNCH_KERNEL(jacobian_adjoint_kernel<T>, blocks_for(batch * hidden), kThreads, 0, stream, batch, dim,
                     hidden, m_bar, jac_prev, jac_bar_prev, ld, d1_prev, d2_prev, a_bar_prev);
}

}  // namespace ivae::cuda::logdet
