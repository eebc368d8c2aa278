// The Brenier log-determinant's backward on the CPU for one thread's rows, in cache-sized
// sub-blocks: the per-sample Hessian adjoint (cpu/brenier_rows.h), then every GEMM of
// ops/brenier_logdet.cpp's backward as register tiles (cpu/tile_gemm.h) whose epilogues do the
// elementwise steps that the ATen sequence makes separate passes for. Math: math/brenier.h
// (Jacobian recurrence and Hessian adjoint) and the map's forward pass (math/icnn.h). Torch-free.
#include <algorithm>
#include <vector>

#include "common/host_device.h"
#include "cpu/brenier_rows.h"
#include "cpu/brenier_tiled.h"
#include "cpu/cpu_clones.h"
#include "cpu/thread_workspace.h"
#include "cpu/tile_gemm.h"
#include "math/brenier.h"
#include "math/softplus.h"

namespace ivae::cpu {
namespace {

using tile::Product;
using tile::tile_cols;
using tile::tile_rows;

struct BrenierBackwardWorkspace;  // owner of this file's thread workspace

// As the forward (brenier_tiled.cpp): sub-blocks of about this many bytes of temporaries, with at
// least kMinJacobianRows rows (samples x d) in the Jacobian GEMMs.
constexpr int64_t kSubBlockBytes = 256 * 1024;
constexpr int64_t kMinJacobianRows = 256;

// Workspace for n samples: σ, σ', σ'', s, s̄, ā, s ⊙ σ' (padded) [K][n][hp] each; c, c̄ [K][n][H];
// J̄ᵀ [n][d][K*H]; Jᵀ_{k-1} diag σ'(a_{k-1}) [n*d][hp]; x padded [n][dp]; Σ_samples J̄ᵀ_k [d][H].
template <typename T>
int64_t workspace_size(const IcnnPacked<T>& p, int64_t n) {
  const int64_t K = p.layers, H = p.hidden, d = p.dim;
  return 7 * K * n * p.hp + 2 * K * n * H + n * d * K * H + n * d * p.hp + n * p.dp + d * H;
}

// out[r0 + r][n0 + c] += acc[r][c] over a tile: a parameter gradient of ld columns.
template <typename T>
struct AddTo {
  T* out;
  int64_t ld;
  template <typename Acc>
  IVAE_CLONE_INLINE void operator()(int64_t r0, int64_t n0, Acc& acc) const {
    constexpr int R = tile_rows<Acc>, C = tile_cols<Acc>;
    for (int r = 0; r < R; ++r) {
      T* __restrict__ o = out + (r0 + r) * ld + n0;
#pragma omp simd
      for (int c = 0; c < C; ++c) o[c] += acc[r][c];
    }
  }
};

// out[rows, cols] += Σ_k a(r, k) b(k, n) over a long k (samples x d): in chunks of k whose operand
// rows stay in L1 while every output tile takes its share (one tile sweep over all of k would
// stream b from further away once per row tile).
constexpr int64_t kReductionChunk = 128;

template <typename T>
IVAE_CLONE_INLINE void add_long_reduction(int64_t rows, int64_t cols, Product<T> product, T* out, int64_t ld) {
  const int64_t depth = product.depth;
  for (int64_t k0 = 0; k0 < depth; k0 += kReductionChunk) {
    Product<T> chunk = product;
    chunk.a = product.a + k0 * product.a_step;
    chunk.b = product.b + k0 * product.ldb;
    chunk.depth = std::min(kReductionChunk, depth - k0);
    tile::gemm<T>(rows, cols, &chunk, 1, AddTo<T>{out, ld});
  }
}

template <typename T>
IVAE_CLONE_INLINE void backward_block(const IcnnPacked<T>& p, int64_t n, const T* x, const T* omega,
                                      const T* saved_a, const T* saved_s, int64_t layer_stride, const T* jac,
                                      const T* minv, std::array<bool, 6> mask, T* x_bar, IcnnPartial<T>& partial,
                                      T* ws) {
  const int64_t K = p.layers, H = p.hidden, d = p.dim, hp = p.hp, dp = p.dp, width = K * H;
  const int64_t slab = n * hp;
  T* z = ws;
  T* d1 = z + K * slab;
  T* d2 = d1 + K * slab;
  T* s = d2 + K * slab;
  T* sb = s + K * slab;  // s̄
  T* ab = sb + K * slab;  // ā
  T* sd = ab + K * slab;  // s_k ⊙ σ'(a_k)
  T* c = sd + K * slab;
  T* cb = c + K * n * H;  // c̄
  T* jb = cb + K * n * H;  // J̄ᵀ, [n][d][K*H] like jac
  T* m = jb + n * d * width;  // Jᵀ_{k-1} diag σ'(a_{k-1}), [n*d][hp]
  T* xp = m + n * d * hp;
  T* sum_jb = xp + n * dp;  // [d][H]
  std::vector<Product<T>> products(std::max<int64_t>(K, 2));

  for (int64_t k = 0; k < K; ++k) {
    for (int64_t b = 0; b < n; ++b) {
      const T* __restrict__ ar = saved_a + k * layer_stride + b * H;
      const T* __restrict__ sr = saved_s + k * layer_stride + b * H;
      const int64_t e = k * slab + b * hp;
      T* __restrict__ cr = c + (k * n + b) * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) {
        const math::SoftplusParts<T> f = math::softplus_parts(ar[h]);
        z[e + h] = f.value;
        d1[e + h] = f.d1;
        d2[e + h] = f.d2;
        s[e + h] = sr[h];
        sd[e + h] = sr[h] * f.d1;
        cr[h] = sr[h] * f.d2;
        ab[e + h] = T(0);
      }
      for (int64_t h = H; h < hp; ++h) z[e + h] = d1[e + h] = d2[e + h] = s[e + h] = sd[e + h] = ab[e + h] = T(0);
    }
  }
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t j = 0; j < dp; ++j) xp[b * dp + j] = j < d ? x[b * d + j] : T(0);
  }
  // J̄ᵀ = 2 ω̄ M Jᵀ diag(c) and c̄, per sample.
  brenier_hessian_adjoint_rows(n, d, K, H, jac, minv, omega, c, n * H, jb, cb);

  // Reverse through the Jacobian recurrence Jᵀ_k = (Jᵀ_{k-1} diag σ'(a_{k-1})) W_kᵀ + A_kᵀ.
  for (int64_t k = K - 1; k >= 0; --k) {
    if (mask[1]) {  // Ā_k += Σ_samples J̄ᵀ_kᵀ: summed as [d, H] rows (vectorised), added transposed
      for (int64_t e = 0; e < d * H; ++e) sum_jb[e] = T(0);
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t j = 0; j < d; ++j) {
          const T* __restrict__ row = jb + (b * d + j) * width + k * H;
          T* __restrict__ acc = sum_jb + j * H;
#pragma omp simd
          for (int64_t h = 0; h < H; ++h) acc[h] += row[h];
        }
      }
      T* out = partial.A.data() + k * H * dp;
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t j = 0; j < d; ++j) out[h * dp + j] += sum_jb[j * H + h];
      }
    }
    if (k == 0) break;
    const T* d1_prev = d1 + (k - 1) * slab;
    const T* d2_prev = d2 + (k - 1) * slab;
    T* ab_prev = ab + (k - 1) * slab;
    if (mask[3]) {  // W̄_k += J̄ᵀ_kᵀ (Jᵀ_{k-1} diag σ'(a_{k-1})) over the n*d rows
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t j = 0; j < d; ++j) {
          const T* __restrict__ jr = jac + (b * d + j) * width + (k - 1) * H;
          const T* __restrict__ dr = d1_prev + b * hp;
          T* __restrict__ mr = m + (b * d + j) * hp;
#pragma omp simd
          for (int64_t h = 0; h < hp; ++h) mr[h] = h < H ? jr[h] * dr[h] : T(0);
        }
      }
      add_long_reduction<T>(H, hp, {jb + k * H, 1, width, m, hp, n * d}, partial.W.data() + (k - 1) * H * hp, hp);
    }
    // M̄ = J̄ᵀ_k W_k; epilogue: J̄ᵀ_{k-1} += M̄ σ'(a_{k-1}), ā_{k-1} += σ''(a_{k-1}) Σ_j M̄ ⊙ Jᵀ_{k-1}.
    products[0] = {jb + k * H, width, 1, p.W_n.data() + (k - 1) * H * hp, hp, H};
    tile::gemm<T>(n * d, hp, products.data(), 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      const int64_t real = std::min<int64_t>(C, H - n0);
      int64_t b = r0 / d, j = r0 - b * d;
      for (int r = 0; r < R; ++r, ++j) {
        if (j == d) j = 0, ++b;
        const int64_t row = r0 + r;
        const T* __restrict__ jp = jac + row * width + (k - 1) * H + n0;
        T* __restrict__ jbr = jb + row * width + (k - 1) * H + n0;
        const T* __restrict__ dr1 = d1_prev + b * hp + n0;
        const T* __restrict__ dr2 = d2_prev + b * hp + n0;
        T* __restrict__ abr = ab_prev + b * hp + n0;
        if (real == C) {
#pragma omp simd
          for (int cc = 0; cc < C; ++cc) {
            const math::JacobianAdjoint<T> a = math::jacobian_adjoint(acc[r][cc], jp[cc], dr1[cc]);
            jbr[cc] += a.jac_bar_add;
            abr[cc] += dr2[cc] * a.a_bar_term;
          }
        } else {
          for (int64_t cc = 0; cc < real; ++cc) {
            const math::JacobianAdjoint<T> a = math::jacobian_adjoint(acc[r][cc], jp[cc], dr1[cc]);
            jbr[cc] += a.jac_bar_add;
            abr[cc] += dr2[cc] * a.a_bar_term;
          }
        }
      }
    });
  }

  // Through c = s ⊙ σ''(a): s̄ = c̄ σ'', ā += c̄ s σ'''.
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t b = 0; b < n; ++b) {
      const int64_t e = k * slab + b * hp;
      const T* __restrict__ cr = cb + (k * n + b) * H;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) {
        const math::CurvatureAdjoint<T> r = math::curvature_adjoint(cr[h], s[e + h], d1[e + h], d2[e + h]);
        sb[e + h] = r.s_bar;
        ab[e + h] += r.a_bar_add;
      }
      for (int64_t h = H; h < hp; ++h) sb[e + h] = T(0);
    }
  }
  // Reverse through ψ's sweep s_{k-1} = (s_k ⊙ σ'(a_k)) W_k, from s_0 upwards.
  for (int64_t k = 1; k < K; ++k) {
    if (mask[3]) {  // W̄_k += (s_k ⊙ σ'(a_k))ᵀ s̄_{k-1}
      products[0] = {sd + k * slab, 1, hp, sb + (k - 1) * slab, hp, n};
      tile::gemm<T>(H, hp, products.data(), 1, AddTo<T>{partial.W.data() + (k - 1) * H * hp, hp});
    }
    // ḡ = s̄_{k-1} W_kᵀ; epilogue: s̄_k += ḡ σ'(a_k), ā_k += ḡ s_k σ''(a_k).
    products[0] = {sb + (k - 1) * slab, hp, 1, p.W_t.data() + (k - 1) * H * hp, hp, H};
    const int64_t base = k * slab;
    tile::gemm<T>(n, hp, products.data(), 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      for (int r = 0; r < R; ++r) {
        const int64_t e = base + (r0 + r) * hp + n0;
#pragma omp simd
        for (int cc = 0; cc < C; ++cc) {
          sb[e + cc] += acc[r][cc] * d1[e + cc];
          ab[e + cc] += acc[r][cc] * s[e + cc] * d2[e + cc];
        }
      }
    });
  }
  // Reverse through the forward pass a_k = W_k z_{k-1} + A_k x + b_k, z_k = σ(a_k).
  for (int64_t k = K - 1; k >= 1; --k) {
    const T* ab_k = ab + k * slab;
    if (mask[3]) {  // W̄_k += ā_kᵀ z_{k-1}
      products[0] = {ab_k, 1, hp, z + (k - 1) * slab, hp, n};
      tile::gemm<T>(H, hp, products.data(), 1, AddTo<T>{partial.W.data() + (k - 1) * H * hp, hp});
    }
    products[0] = {ab_k, hp, 1, p.W_n.data() + (k - 1) * H * hp, hp, H};
    const int64_t base = (k - 1) * slab;
    tile::gemm<T>(n, hp, products.data(), 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      for (int r = 0; r < R; ++r) {
        const int64_t e = base + (r0 + r) * hp + n0;
#pragma omp simd
        for (int cc = 0; cc < C; ++cc) ab[e + cc] += acc[r][cc] * d1[e + cc];
      }
    });
  }
  if (mask[0]) {  // x̄ = Σ_k ā_k A_k
    for (int64_t k = 0; k < K; ++k) products[k] = {ab + k * slab, hp, 1, p.A_n.data() + k * H * dp, dp, H};
    tile::gemm<T>(n, dp, products.data(), static_cast<int>(K), [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      const int64_t real = std::min<int64_t>(C, d - n0);
      for (int r = 0; r < R; ++r) {
        for (int64_t cc = 0; cc < real; ++cc) x_bar[(r0 + r) * d + n0 + cc] = acc[r][cc];
      }
    });
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* ab_k = ab + k * slab;
    if (mask[1]) {  // Ā_k += ā_kᵀ x
      products[0] = {ab_k, 1, hp, xp, dp, n};
      tile::gemm<T>(H, dp, products.data(), 1, AddTo<T>{partial.A.data() + k * H * dp, dp});
    }
    if (mask[2]) {  // b̄_k += Σ_samples ā_k
      T* __restrict__ out = partial.b.data() + k * hp;
      for (int64_t b = 0; b < n; ++b) {
#pragma omp simd
        for (int64_t h = 0; h < hp; ++h) out[h] += ab_k[b * hp + h];
      }
    }
  }
  if (mask[4]) {  // w̄ += Σ_samples s̄_{K-1} (s_{K-1} = w for every sample)
    T* __restrict__ out = partial.w.data();
    const T* top = sb + (K - 1) * slab;
    for (int64_t b = 0; b < n; ++b) {
#pragma omp simd
      for (int64_t h = 0; h < hp; ++h) out[h] += top[b * hp + h];
    }
  }
  if (mask[5]) {  // ᾱ += Σ_samples ω̄ tr M
    T sum = 0;
    for (int64_t b = 0; b < n; ++b) {
      T trace = 0;
      for (int64_t j = 0; j < d; ++j) trace += minv[(b * d + j) * d + j];
      sum += omega[b] * trace;
    }
    partial.alpha += sum;
  }
}

template <typename T>
IVAE_CLONE_INLINE void backward_rows(const IcnnPacked<T>& p, int64_t rows, const T* x, const T* omega,
                                     const T* saved_a, const T* saved_s, int64_t layer_stride, const T* jac,
                                     const T* minv, std::array<bool, 6> mask, T* x_bar, IcnnPartial<T>& partial) {
  const int64_t d = p.dim, H = p.hidden, width = p.layers * H;
  // Per sample: the workspace plus the kept Jacobian and inverse it reads.
  const int64_t per_sample = (workspace_size(p, 1) + d * width + d * d) * static_cast<int64_t>(sizeof(T));
  const int64_t at_least = (kMinJacobianRows + d - 1) / std::max<int64_t>(d, 1);
  const int64_t block = std::clamp<int64_t>(std::max(kSubBlockBytes / per_sample, at_least), 1, 256);
  T* ws = thread_workspace<BrenierBackwardWorkspace, T>(workspace_size(p, std::min(block, rows)));
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    backward_block(p, n, x + r * d, omega + r, saved_a + r * H, saved_s + r * H, layer_stride, jac + r * d * width,
                   minv + r * d * d, mask, x_bar ? x_bar + r * d : nullptr, partial, ws);
  }
}

}  // namespace

#define IVAE_BRENIER_TILED_BACKWARD_FOR(T)                                                                        \
  IVAE_CPU_CLONES void brenier_tiled_logdet_backward(                                                             \
      const IcnnPacked<T>& p, int64_t rows, const T* x, const T* grad_logdet, const T* saved_a, const T* saved_s, \
      int64_t layer_stride, const T* jac, const T* minv, std::array<bool, 6> mask, T* x_bar,                      \
      IcnnPartial<T>& partial) {                                                                                  \
    backward_rows(p, rows, x, grad_logdet, saved_a, saved_s, layer_stride, jac, minv, mask, x_bar, partial);      \
  }

IVAE_BRENIER_TILED_BACKWARD_FOR(float)
IVAE_BRENIER_TILED_BACKWARD_FOR(double)

#undef IVAE_BRENIER_TILED_BACKWARD_FOR

}  // namespace ivae::cpu
