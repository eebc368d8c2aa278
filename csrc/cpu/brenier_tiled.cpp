#include "cpu/brenier_tiled.h"

#include <algorithm>
#include <vector>

#include "common/host_device.h"
#include "cpu/brenier_rows.h"
#include "cpu/cpu_clones.h"
#include "cpu/thread_workspace.h"
#include "cpu/tile_gemm.h"
#include "math/brenier.h"
#include "math/softplus.h"

namespace ivae::cpu {
namespace {

using tile::Product;

struct BrenierTiledWorkspace;  // owner of this file's thread workspace
using tile::tile_cols;
using tile::tile_rows;

// Samples per sub-block: its Jacobians ([d, K*H] each) and temporaries stay in a core's L2.
constexpr int64_t kSubBlockBytes = 256 * 1024;
constexpr int64_t kMinJacobianRows = 256;

// Workspace for n samples: σ' [K][n][hp], c [K][n][H], the GEMM operand Jᵀ_k diag σ'(a_k) of two
// consecutive layers [2][n*d][hp] (a tile's epilogue must not overwrite rows that the next column
// tile of the same rows still reads) and, when the caller keeps no Jacobian, the Jacobian
// [n][d][K*H].
template <typename T>
int64_t workspace_size(const IcnnPacked<T>& p, int64_t n, bool own_jacobian) {
  const int64_t K = p.layers, H = p.hidden, d = p.dim;
  return K * n * p.hp + K * n * H + 2 * n * d * p.hp + (own_jacobian ? n * d * K * H : 0);
}

template <typename T>
IVAE_CLONE_INLINE void logdet_block(const IcnnPacked<T>& p, int64_t n, const T* saved_a, const T* saved_s,
                                    int64_t layer_stride, T* logdet, int32_t* info, T* jac, T* minv, bool low_rank,
                                    T* ws) {
  const int64_t K = p.layers, H = p.hidden, d = p.dim, hp = p.hp, width = K * H;
  T* d1 = ws;
  T* c = d1 + K * n * hp;
  T* operand = c + K * n * H;            // layer k-1's Jᵀ diag σ', read by layer k's tiles
  T* next = operand + n * d * hp;        // layer k's, written by them
  // σ'(a_k) (padded) and c_k = s_k ⊙ σ''(a_k).
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t b = 0; b < n; ++b) {
      const T* __restrict__ ar = saved_a + k * layer_stride + b * H;
      const T* __restrict__ sr = saved_s + k * layer_stride + b * H;
      T* __restrict__ dr = d1 + (k * n + b) * hp;
      T* __restrict__ cr = c + (k * n + b) * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) {
        const math::SoftplusParts<T> f = math::softplus_parts(ar[h]);
        dr[h] = f.d1;
        cr[h] = sr[h] * f.d2;
      }
      for (int64_t h = H; h < hp; ++h) dr[h] = T(0);
    }
  }
  // Jᵀ_0 = A_0ᵀ for every sample; then each layer's tiles over the n*d rows (sample b, input j).
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t j = 0; j < d; ++j) {
      const T* __restrict__ at = p.A_t.data() + j * hp;
      const T* __restrict__ dr = d1 + b * hp;
      T* __restrict__ out = jac + (b * d + j) * width;
      T* __restrict__ nx = operand + (b * d + j) * hp;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) {
        const math::JacobianStep<T> s = math::jacobian_step(T(0), at[h], dr[h]);
        out[h] = s.jac;
        nx[h] = s.next;
      }
    }
  }
  Product<T> product;
  for (int64_t k = 1; k < K; ++k) {
    product = {operand, hp, 1, p.W_t.data() + (k - 1) * H * hp, hp, H};
    const T* at_k = p.A_t.data() + k * d * hp;
    const T* d1_k = d1 + k * n * hp;
    const bool last = k + 1 == K;
    tile::gemm<T>(n * d, hp, &product, 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      const int64_t real = std::min<int64_t>(C, H - n0);
      int64_t b = r0 / d, j = r0 - b * d;  // the row's sample and input, stepped (no division per row)
      for (int r = 0; r < R; ++r, ++j) {
        if (j == d) j = 0, ++b;
        const int64_t row = r0 + r;
        const T* __restrict__ at = at_k + j * hp + n0;
        const T* __restrict__ dr = d1_k + b * hp + n0;
        T* __restrict__ out = jac + row * width + k * H + n0;
        T* __restrict__ nx = next + row * hp + n0;
        if (real == C) {  // the common case: straight to the outputs
          if (last) {
#pragma omp simd
            for (int c = 0; c < C; ++c) out[c] = math::jacobian_step(acc[r][c], at[c], dr[c]).jac;
            continue;
          }
#pragma omp simd
          for (int c = 0; c < C; ++c) {
            const math::JacobianStep<T> s = math::jacobian_step(acc[r][c], at[c], dr[c]);
            out[c] = s.jac;
            nx[c] = s.next;
          }
          continue;
        }
        T jac_tile[C], next_tile[C];
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          const math::JacobianStep<T> s = math::jacobian_step(acc[r][c], at[c], dr[c]);
          jac_tile[c] = s.jac;
          next_tile[c] = s.next;
        }
        for (int64_t c = 0; c < real; ++c) out[c] = jac_tile[c];
        if (!last) {
          for (int c = 0; c < C; ++c) nx[c] = next_tile[c];
        }
      }
    });
    std::swap(operand, next);
  }
  if (low_rank) {
    brenier_low_rank_logdet_rows(n, d, K, H, jac, c, n * H, p.alpha, logdet, info, minv);
  } else {
    brenier_hessian_logdet_rows(n, d, K, H, jac, c, n * H, p.alpha, logdet, info, minv);
  }
}

template <typename T>
IVAE_CLONE_INLINE void logdet_rows(const IcnnPacked<T>& p, int64_t rows, const T* x, T* psi, T* grad, T* saved_a,
                                   T* saved_s, int64_t layer_stride, T* logdet, int32_t* info, T* jac, T* minv,
                                   bool low_rank) {
  const bool own_jacobian = jac == nullptr;
  const int64_t per_sample = workspace_size(p, 1, true) * static_cast<int64_t>(sizeof(T));
  // At least kMinJacobianRows GEMM rows (samples x d) per sub-block: below that the tiles' fixed
  // costs show (measured at d = 64, where one sample's Jacobian is 128 KB).
  const int64_t at_least = (kMinJacobianRows + p.dim - 1) / std::max<int64_t>(p.dim, 1);  // d = 0: no Jacobian rows
  const int64_t block = std::clamp<int64_t>(std::max(kSubBlockBytes / per_sample, at_least), 1, 256);
  T* ws = thread_workspace<BrenierTiledWorkspace, T>(workspace_size(p, std::min(block, rows), own_jacobian));
  const int64_t d = p.dim, H = p.hidden, width = p.layers * H;
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    icnn_tiled_forward(p, n, x + r * d, psi + r, grad + r * d, saved_a + r * H, saved_s + r * H, layer_stride);
    T* jac_block = own_jacobian ? ws + workspace_size(p, n, false) : jac + r * d * width;
    logdet_block(p, n, saved_a + r * H, saved_s + r * H, layer_stride, logdet + r, info + r, jac_block,
                 minv ? minv + r * d * d : nullptr, low_rank, ws);
  }
}

}  // namespace

#define IVAE_BRENIER_TILED_FOR(T)                                                                            \
  IVAE_CPU_CLONES void brenier_tiled_logdet(const IcnnPacked<T>& p, int64_t rows, const T* x, T* psi,        \
                                            T* grad, T* saved_a, T* saved_s, int64_t layer_stride,           \
                                            T* logdet, int32_t* info, T* jac, T* minv, bool low_rank) {      \
    logdet_rows(p, rows, x, psi, grad, saved_a, saved_s, layer_stride, logdet, info, jac, minv, low_rank);   \
  }

IVAE_BRENIER_TILED_FOR(float)
IVAE_BRENIER_TILED_FOR(double)

#undef IVAE_BRENIER_TILED_FOR

}  // namespace ivae::cpu
