#include "cpu/icnn_tiled.h"

#include <algorithm>

#include "common/host_device.h"
#include "cpu/cpu_clones.h"
#include "cpu/thread_workspace.h"
#include "cpu/tile_gemm.h"
#include "math/icnn.h"

namespace ivae::cpu {
namespace {

using tile::Product;

struct IcnnTiledWorkspace;  // owner of this file's thread workspace
using tile::tile_cols;
using tile::tile_rows;

// Sub-blocks of rows whose temporaries take about this much: they stay in a core's L2.
constexpr int64_t kSubBlockBytes = 512 * 1024;

int64_t sub_block_rows(int64_t bytes_per_row) {
  const int64_t rows = kSubBlockBytes / std::max<int64_t>(bytes_per_row, 1);
  return std::clamp<int64_t>(rows / 4 * 4, 4, 256);
}

template <typename T>
IcnnPacked<T> pack(int64_t dim, int64_t hidden, int64_t layers, const T* A, const T* b, const T* W, const T* w,
                   T alpha) {
  IcnnPacked<T> p;
  p.dim = dim, p.hidden = hidden, p.layers = layers, p.alpha = alpha;
  p.hp = tile::padded(hidden), p.dp = tile::padded(dim);
  const int64_t H = hidden, d = dim, hp = p.hp, dp = p.dp;
  p.A_t.assign(layers * d * hp, T(0));
  p.A_n.assign(layers * H * dp, T(0));
  p.bias.assign(layers * hp, T(0));
  p.w.assign(hp, T(0));
  for (int64_t k = 0; k < layers; ++k) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t j = 0; j < d; ++j) {
        const T v = A[(k * H + h) * d + j];
        p.A_t[(k * d + j) * hp + h] = v;
        p.A_n[(k * H + h) * dp + j] = v;
      }
      p.bias[k * hp + h] = b[k * H + h];
    }
  }
  p.W_t.assign(std::max<int64_t>(layers - 1, 0) * H * hp, T(0));
  p.W_n.assign(std::max<int64_t>(layers - 1, 0) * H * hp, T(0));
  for (int64_t k = 0; k + 1 < layers; ++k) {
    for (int64_t i = 0; i < H; ++i) {
      for (int64_t j = 0; j < H; ++j) {
        const T v = W[(k * H + i) * H + j];
        p.W_n[(k * H + i) * hp + j] = v;
        p.W_t[(k * H + j) * hp + i] = v;
      }
    }
  }
  for (int64_t h = 0; h < H; ++h) p.w[h] = w[h];
  return p;
}

// Forward of n rows (math: DESIGN.md op 2). Workspace: d1 and g [K][n][hp], z twice [n][hp].
template <typename T>
IVAE_CLONE_INLINE void forward_block(const IcnnPacked<T>& p, int64_t n, const T* x, T* psi, T* grad, T* saved_a,
                                     T* saved_s, int64_t layer_stride, T* ws) {
  const int64_t K = p.layers, H = p.hidden, d = p.dim, hp = p.hp, dp = p.dp;
  T* d1 = ws;
  T* g = d1 + K * n * hp;
  T* z_prev = g + K * n * hp;
  T* z_cur = z_prev + n * hp;
  std::vector<Product<T>> products(std::max<int64_t>(K, 2));

  // a_k = x A_kᵀ + z_{k-1} W_kᵀ + b_k;  z_k = σ(a_k), σ'(a_k).
  for (int64_t k = 0; k < K; ++k) {
    products[0] = {x, d, 1, p.A_t.data() + k * d * hp, hp, d};
    if (k > 0) products[1] = {z_prev, hp, 1, p.W_t.data() + (k - 1) * H * hp, hp, H};
    T* a_out = saved_a + k * layer_stride;
    T* d1_k = d1 + k * n * hp;
    const T* bias = p.bias.data() + k * hp;
    tile::gemm<T>(n, hp, products.data(), k > 0 ? 2 : 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      const int64_t real = std::min<int64_t>(C, H - n0);
      for (int r = 0; r < R; ++r) {
        const int64_t row = r0 + r;
        T* __restrict__ zr = z_cur + row * hp + n0;
        T* __restrict__ dr = d1_k + row * hp + n0;
        T a_tile[C];
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          const math::IcnnLayerForward<T> f = math::icnn_layer_forward(acc[r][c], bias[n0 + c]);
          a_tile[c] = f.a;
          zr[c] = f.z;
          dr[c] = f.d1;
        }
        T* __restrict__ ar = a_out + row * H + n0;
        for (int64_t c = 0; c < real; ++c) ar[c] = a_tile[c];
      }
    });
    std::swap(z_prev, z_cur);
  }

  // ψ = z_{K-1}·w + ½α‖x‖²; the reverse sweep starts at s_{K-1} = w, g_{K-1} = w ⊙ σ'(a_{K-1}).
  const T* w = p.w.data();
  for (int64_t row = 0; row < n; ++row) {
    const T* __restrict__ zr = z_prev + row * hp;
    const T* __restrict__ dr = d1 + ((K - 1) * n + row) * hp;
    T* __restrict__ gr = g + ((K - 1) * n + row) * hp;
    T potential = 0, square = 0;
#pragma omp simd reduction(+ : potential)
    for (int64_t c = 0; c < hp; ++c) {
      potential += zr[c] * w[c];
      gr[c] = w[c] * dr[c];
    }
    const T* __restrict__ xr = x + row * d;
    for (int64_t j = 0; j < d; ++j) square += xr[j] * xr[j];
    psi[row] = potential + (p.alpha == T(0) ? T(0) : T(0.5) * p.alpha * square);  // α = 0: no 0·inf
    T* __restrict__ sr = saved_s + (K - 1) * layer_stride + row * H;
    for (int64_t c = 0; c < H; ++c) sr[c] = w[c];
  }
  // s_{k-1} = g_k W_k, g_{k-1} = s_{k-1} ⊙ σ'(a_{k-1}).
  for (int64_t k = K - 1; k >= 1; --k) {
    products[0] = {g + k * n * hp, hp, 1, p.W_n.data() + (k - 1) * H * hp, hp, H};
    T* s_out = saved_s + (k - 1) * layer_stride;
    const T* d1_prev = d1 + (k - 1) * n * hp;
    T* g_prev = g + (k - 1) * n * hp;
    tile::gemm<T>(n, hp, products.data(), 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      const int64_t real = std::min<int64_t>(C, H - n0);
      for (int r = 0; r < R; ++r) {
        const int64_t row = r0 + r;
        const T* __restrict__ dr = d1_prev + row * hp + n0;
        T* __restrict__ gr = g_prev + row * hp + n0;
#pragma omp simd
        for (int c = 0; c < C; ++c) gr[c] = acc[r][c] * dr[c];
        T* __restrict__ sr = s_out + row * H + n0;
        for (int64_t c = 0; c < real; ++c) sr[c] = acc[r][c];
      }
    });
  }
  // ∇ψ = Σ_k g_k A_k + α x.
  for (int64_t k = 0; k < K; ++k) products[k] = {g + k * n * hp, hp, 1, p.A_n.data() + k * H * dp, dp, H};
  tile::gemm<T>(n, dp, products.data(), static_cast<int>(K), [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
    constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
    const int64_t real = std::min<int64_t>(C, d - n0);
    for (int r = 0; r < R; ++r) {
      const int64_t row = r0 + r;
      for (int64_t c = 0; c < real; ++c) grad[row * d + n0 + c] = acc[r][c] + p.alpha * x[row * d + n0 + c];
    }
  });
}

template <typename T>
IVAE_CLONE_INLINE void forward_rows(const IcnnPacked<T>& p, int64_t rows, const T* x, T* psi, T* grad, T* saved_a,
                                    T* saved_s, int64_t layer_stride) {
  const int64_t K = p.layers, hp = p.hp;
  const int64_t block = sub_block_rows((2 * K + 2) * hp * static_cast<int64_t>(sizeof(T)));
  T* ws = thread_workspace<IcnnTiledWorkspace, T>((2 * K + 2) * std::min(block, rows) * hp);
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    forward_block(p, n, x + r * p.dim, psi + r, grad + r * p.dim, saved_a + r * p.hidden, saved_s + r * p.hidden,
                  layer_stride, ws);
  }
}

// Workspace of the backward for n rows: x and ḡ padded [n][dp]; z, ż, σ', σ'', ȧ, s, ā [K][n][hp];
// ǡ of the current layer [n][hp].
template <typename T>
int64_t backward_workspace(const IcnnPacked<T>& p, int64_t n) {
  return 2 * n * p.dp + (7 * p.layers + 1) * n * p.hp;
}

template <typename T>
IVAE_CLONE_INLINE void backward_block(const IcnnPacked<T>& p, int64_t n, const T* x, const T* psi_bar,
                                      const T* grad_bar, const T* saved_a, const T* saved_s, int64_t layer_stride,
                                      std::array<bool, 6> mask, T* x_bar, IcnnPartial<T>& partial, T* ws) {
  const int64_t K = p.layers, H = p.hidden, d = p.dim, hp = p.hp, dp = p.dp;
  const int64_t slab = n * hp;
  T* xp = ws;
  T* gb = xp + n * dp;
  T* z = gb + n * dp;
  T* zd = z + K * slab;
  T* d1 = zd + K * slab;
  T* d2 = d1 + K * slab;
  T* ad = d2 + K * slab;
  T* s = ad + K * slab;
  T* ab = s + K * slab;
  T* adb = ab + K * slab;
  std::vector<Product<T>> products(std::max<int64_t>(K, 2));

  for (int64_t row = 0; row < n; ++row) {  // x and ḡ with padded rows: B operands of Ā
    for (int64_t j = 0; j < dp; ++j) {
      xp[row * dp + j] = j < d ? x[row * d + j] : T(0);
      gb[row * dp + j] = j < d ? grad_bar[row * d + j] : T(0);
    }
  }
  for (int64_t k = 0; k < K; ++k) {  // σ, σ', σ'' of the saved a_k; s_k padded
    for (int64_t row = 0; row < n; ++row) {
      const T* __restrict__ ar = saved_a + k * layer_stride + row * H;
      const T* __restrict__ sr = saved_s + k * layer_stride + row * H;
      const int64_t e = k * slab + row * hp;
#pragma omp simd
      for (int64_t c = 0; c < H; ++c) {
        const math::SoftplusParts<T> f = math::softplus_parts(ar[c]);
        z[e + c] = f.value;
        d1[e + c] = f.d1;
        d2[e + c] = f.d2;
        s[e + c] = sr[c];
      }
      for (int64_t c = H; c < hp; ++c) z[e + c] = d1[e + c] = d2[e + c] = s[e + c] = T(0);
    }
  }
  // Tangent along ḡ: ȧ_k = ḡ A_kᵀ + ż_{k-1} W_kᵀ, ż_k = σ'(a_k) ȧ_k.
  for (int64_t k = 0; k < K; ++k) {
    products[0] = {gb, dp, 1, p.A_t.data() + k * d * hp, hp, d};
    if (k > 0) products[1] = {zd + (k - 1) * slab, hp, 1, p.W_t.data() + (k - 1) * H * hp, hp, H};
    T* ad_k = ad + k * slab;
    T* zd_k = zd + k * slab;
    const T* d1_k = d1 + k * slab;
    tile::gemm<T>(n, hp, products.data(), k > 0 ? 2 : 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      for (int r = 0; r < R; ++r) {
        const int64_t e = (r0 + r) * hp + n0;
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          ad_k[e + c] = acc[r][c];
          zd_k[e + c] = d1_k[e + c] * acc[r][c];
        }
      }
    });
  }
  // Top layer: z̄_{K-1} = ψ̄ w; ż̄_k = s_k for every k (the forward's reverse sweep).
  {
    const int64_t base = (K - 1) * slab;
    for (int64_t row = 0; row < n; ++row) {
      const T pb = psi_bar[row];
      const int64_t e = base + row * hp;
#pragma omp simd
      for (int64_t c = 0; c < hp; ++c) {
        const math::IcnnLayerAdjoint<T> j = math::icnn_layer_adjoint(s[e + c], pb * p.w[c], ad[e + c], d1[e + c], d2[e + c]);
        adb[row * hp + c] = j.adot_bar;
        ab[e + c] = j.a_bar;
      }
    }
  }
  for (int64_t k = K - 1; k >= 0; --k) {
    const T* ab_k = ab + k * slab;
    if (mask[1]) {  // Ā_k += ā_kᵀ x + ǡ_kᵀ ḡ
      products[0] = {ab_k, 1, hp, xp, dp, n};
      products[1] = {adb, 1, hp, gb, dp, n};
      T* out = partial.A.data() + k * H * dp;
      tile::gemm<T>(H, dp, products.data(), 2, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
        constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
        for (int r = 0; r < R; ++r) {
#pragma omp simd
          for (int c = 0; c < C; ++c) out[(r0 + r) * dp + n0 + c] += acc[r][c];
        }
      });
    }
    if (mask[2]) {  // b̄_k += Σ_rows ā_k
      T* __restrict__ out = partial.b.data() + k * hp;
      for (int64_t row = 0; row < n; ++row) {
#pragma omp simd
        for (int64_t c = 0; c < hp; ++c) out[c] += ab_k[row * hp + c];
      }
    }
    if (k == 0) break;
    if (mask[3]) {  // W̄_k += ā_kᵀ z_{k-1} + ǡ_kᵀ ż_{k-1}
      products[0] = {ab_k, 1, hp, z + (k - 1) * slab, hp, n};
      products[1] = {adb, 1, hp, zd + (k - 1) * slab, hp, n};
      T* out = partial.W.data() + (k - 1) * H * hp;
      tile::gemm<T>(H, hp, products.data(), 2, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
        constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
        for (int r = 0; r < R; ++r) {
#pragma omp simd
          for (int c = 0; c < C; ++c) out[(r0 + r) * hp + n0 + c] += acc[r][c];
        }
      });
    }
    // z̄_{k-1} = ā_k W_k, then the layer adjoint of k-1 in the epilogue.
    products[0] = {ab_k, hp, 1, p.W_n.data() + (k - 1) * H * hp, hp, H};
    const int64_t base = (k - 1) * slab;
    tile::gemm<T>(n, hp, products.data(), 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      for (int r = 0; r < R; ++r) {
        const int64_t o = (r0 + r) * hp + n0, e = base + o;
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          const math::IcnnLayerAdjoint<T> j =
              math::icnn_layer_adjoint(s[e + c], acc[r][c], ad[e + c], d1[e + c], d2[e + c]);
          adb[o + c] = j.adot_bar;
          ab[e + c] = j.a_bar;
        }
      }
    });
  }
  if (mask[0]) {  // x̄ = Σ_k ā_k A_k + α (ψ̄ x + ḡ)
    for (int64_t k = 0; k < K; ++k) products[k] = {ab + k * slab, hp, 1, p.A_n.data() + k * H * dp, dp, H};
    tile::gemm<T>(n, dp, products.data(), static_cast<int>(K), [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      const int64_t real = std::min<int64_t>(C, d - n0);
      for (int r = 0; r < R; ++r) {
        const int64_t row = r0 + r;
        for (int64_t c = 0; c < real; ++c) {
          const int64_t e = row * d + n0 + c;
          x_bar[e] = acc[r][c] + p.alpha * (psi_bar[row] * x[e] + grad_bar[e]);
        }
      }
    });
  }
  if (mask[4]) {  // w̄ += Σ_rows ψ̄ z_{K-1} + ż_{K-1}
    const T* zt = z + (K - 1) * slab;
    const T* zdt = zd + (K - 1) * slab;
    T* __restrict__ out = partial.w.data();
    for (int64_t row = 0; row < n; ++row) {
      const T pb = psi_bar[row];
#pragma omp simd
      for (int64_t c = 0; c < hp; ++c) out[c] += pb * zt[row * hp + c] + zdt[row * hp + c];
    }
  }
  if (mask[5]) {  // ᾱ += Σ_rows x·(ḡ + ½ ψ̄ x)
    T sum = 0;
    for (int64_t row = 0; row < n; ++row) {
      for (int64_t j = 0; j < d; ++j) {
        const int64_t e = row * d + j;
        sum += x[e] * (grad_bar[e] + T(0.5) * psi_bar[row] * x[e]);
      }
    }
    partial.alpha += sum;
  }
}

template <typename T>
IVAE_CLONE_INLINE void backward_rows(const IcnnPacked<T>& p, int64_t rows, const T* x, const T* psi_bar,
                                     const T* grad_bar, const T* saved_a, const T* saved_s, int64_t layer_stride,
                                     std::array<bool, 6> mask, T* x_bar, IcnnPartial<T>& partial) {
  const int64_t per_row = backward_workspace(p, 1) * static_cast<int64_t>(sizeof(T));
  const int64_t block = sub_block_rows(per_row);
  T* ws = thread_workspace<IcnnTiledWorkspace, T>(backward_workspace(p, std::min(block, rows)));
  const int64_t d = p.dim, H = p.hidden;
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    backward_block(p, n, x + r * d, psi_bar + r, grad_bar + r * d, saved_a + r * H, saved_s + r * H, layer_stride,
                   mask, x_bar ? x_bar + r * d : nullptr, partial, ws);
  }
}

}  // namespace

#define IVAE_ICNN_TILED_FOR(T)                                                                               \
  IcnnPacked<T> pack_icnn(int64_t dim, int64_t hidden, int64_t layers, const T* A, const T* b, const T* W,   \
                          const T* w, T alpha) {                                                             \
    return pack(dim, hidden, layers, A, b, W, w, alpha);                                                     \
  }                                                                                                          \
  IVAE_CPU_CLONES void icnn_tiled_forward(const IcnnPacked<T>& p, int64_t rows, const T* x, T* psi, T* grad, \
                                          T* saved_a, T* saved_s, int64_t layer_stride) {                    \
    forward_rows(p, rows, x, psi, grad, saved_a, saved_s, layer_stride);                                     \
  }                                                                                                          \
  IVAE_CPU_CLONES void icnn_tiled_backward(const IcnnPacked<T>& p, int64_t rows, const T* x, const T* psi_bar, \
                                           const T* grad_bar, const T* saved_a, const T* saved_s,            \
                                           int64_t layer_stride, std::array<bool, 6> mask, T* x_bar,         \
                                           IcnnPartial<T>& partial) {                                        \
    backward_rows(p, rows, x, psi_bar, grad_bar, saved_a, saved_s, layer_stride, mask, x_bar, partial);     \
  }

IVAE_ICNN_TILED_FOR(float)
IVAE_ICNN_TILED_FOR(double)

#undef IVAE_ICNN_TILED_FOR

}  // namespace ivae::cpu
