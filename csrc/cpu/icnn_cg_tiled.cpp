#include "cpu/icnn_cg_tiled.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/cpu_clones.h"
#include "cpu/thread_workspace.h"
#include "cpu/tile_gemm.h"
#include "math/softplus.h"

namespace ivae::cpu {
namespace {

using tile::Product;
using tile::tile_cols;
using tile::tile_rows;

struct IcnnCgWorkspace;  // owner of this file's thread workspace

// Rows solved together: their curvature factors and tangents stay in a core's L2.
constexpr int64_t kSubBlockBytes = 512 * 1024;

// Per-slot state of a sub-block. A slot holds one row until it converges; then the last live
// slot moves into it, so the products always run over slots [0, live).
template <typename T>
struct Slots {
  int64_t n, hp, dp, K;
  T* d1;   // [K][n][hp] σ'(a_k)
  T* c;    // [K][n][hp] c_k = s_k σ''(a_k)
  T* zd;   // [2][n][hp] ping-pong: σ'(a_k) ȧ_k of the layer below
  T* p;    // [n][dp] search direction (zero padding)
  T* hp_;  // [n][dp] H p
  T* u;    // [n][dp]
  T* r;    // [n][dp]
  T* cad;  // [K][n][hp] c_k ⊙ ȧ_k, then the adjoints ā_k
  T* rr;   // [n]
  int64_t* row;  // [n] the row a slot holds
};

template <typename T>
int64_t workspace_per_row(int64_t K, int64_t hp, int64_t dp) {
  return 3 * K * hp + 2 * hp + 4 * dp + 1;
}

template <typename T>
IVAE_CLONE_INLINE void move_slot(Slots<T>& s, int64_t from, int64_t to) {
  const int64_t hp = s.hp, dp = s.dp;
  for (int64_t k = 0; k < s.K; ++k) {
    std::copy_n(s.d1 + (k * s.n + from) * hp, hp, s.d1 + (k * s.n + to) * hp);
    std::copy_n(s.c + (k * s.n + from) * hp, hp, s.c + (k * s.n + to) * hp);
  }
  std::copy_n(s.p + from * dp, dp, s.p + to * dp);
  std::copy_n(s.u + from * dp, dp, s.u + to * dp);
  std::copy_n(s.r + from * dp, dp, s.r + to * dp);
  s.rr[to] = s.rr[from];
  s.row[to] = s.row[from];
}

// H p for slots [0, m): tangent ȧ_k = p A_kᵀ + ż_{k-1} W_kᵀ (epilogue: ż_k = σ'_k ȧ_k and
// c_k ȧ_k), back ā_{k-1} = c_{k-1} ȧ_{k-1} + σ'_{k-1} ⊙ (ā_k W_k), then Σ_k ā_k A_k + α p.
template <typename T>
IVAE_CLONE_INLINE void hessian_vector(const IcnnPacked<T>& pk, Slots<T>& s, int64_t m) {
  const int64_t K = pk.layers, H = pk.hidden, d = pk.dim, hp = pk.hp, dp = pk.dp, n = s.n;
  std::vector<Product<T>> products(std::max<int64_t>(K, 2));
  for (int64_t k = 0; k < K; ++k) {
    products[0] = {s.p, dp, 1, pk.A_t.data() + k * d * hp, hp, d};
    if (k > 0) products[1] = {s.zd + ((k - 1) % 2) * n * hp, hp, 1, pk.W_t.data() + (k - 1) * H * hp, hp, H};
    const T* d1_k = s.d1 + k * n * hp;
    const T* c_k = s.c + k * n * hp;
    T* zd_k = s.zd + (k % 2) * n * hp;
    T* cad_k = s.cad + k * n * hp;
    tile::gemm<T>(m, hp, products.data(), k > 0 ? 2 : 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      for (int r = 0; r < R; ++r) {
        const int64_t e = (r0 + r) * hp + n0;
#pragma omp simd
        for (int c = 0; c < C; ++c) {
          zd_k[e + c] = d1_k[e + c] * acc[r][c];
          cad_k[e + c] = c_k[e + c] * acc[r][c];
        }
      }
    });
  }
  for (int64_t k = K - 1; k >= 1; --k) {  // ā_{k-1} = c ȧ + σ' ⊙ (ā_k W_k), in place over cad
    products[0] = {s.cad + k * n * hp, hp, 1, pk.W_n.data() + (k - 1) * H * hp, hp, H};
    const T* d1_prev = s.d1 + (k - 1) * n * hp;
    T* ab_prev = s.cad + (k - 1) * n * hp;
    tile::gemm<T>(m, hp, products.data(), 1, [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
      constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
      for (int r = 0; r < R; ++r) {
        const int64_t e = (r0 + r) * hp + n0;
#pragma omp simd
        for (int c = 0; c < C; ++c) ab_prev[e + c] += d1_prev[e + c] * acc[r][c];
      }
    });
  }
  for (int64_t k = 0; k < K; ++k) products[k] = {s.cad + k * n * hp, hp, 1, pk.A_n.data() + k * H * dp, dp, H};
  const T alpha = pk.alpha;
  tile::gemm<T>(m, dp, products.data(), static_cast<int>(K), [&](int64_t r0, int64_t n0, auto& acc) __attribute__((always_inline)) {
    constexpr int R = tile_rows<decltype(acc)>, C = tile_cols<decltype(acc)>;
    for (int r = 0; r < R; ++r) {
      const int64_t e = (r0 + r) * dp + n0;
#pragma omp simd
      for (int c = 0; c < C; ++c) s.hp_[e + c] = acc[r][c] + alpha * s.p[e + c];
    }
  });
}

template <typename T>
IVAE_CLONE_INLINE bool converged(const T* r, int64_t d, T tol) {
  for (int64_t j = 0; j < d; ++j) {
    if (!(std::abs(r[j]) < tol)) return false;
  }
  return true;
}

template <typename T>
IVAE_CLONE_INLINE void solve_block(const IcnnPacked<T>& pk, int64_t n, const T* saved_a, const T* saved_s,
                                   int64_t layer_stride, const T* v, T tol, int64_t max_iter, T* u_out, T* r_out,
                                   int32_t* iterations, T* ws) {
  const int64_t K = pk.layers, H = pk.hidden, d = pk.dim, hp = pk.hp, dp = pk.dp;
  Slots<T> s;
  s.n = n, s.hp = hp, s.dp = dp, s.K = K;
  s.d1 = ws;
  s.c = s.d1 + K * n * hp;
  s.cad = s.c + K * n * hp;
  s.zd = s.cad + K * n * hp;
  s.p = s.zd + 2 * n * hp;
  s.hp_ = s.p + n * dp;
  s.u = s.hp_ + n * dp;
  s.r = s.u + n * dp;
  s.rr = s.r + n * dp;
  std::vector<int64_t> row(n);
  s.row = row.data();

  const auto finish = [&](int64_t slot, int32_t count) {
    const int64_t i = s.row[slot];
    for (int64_t j = 0; j < d; ++j) {
      u_out[i * d + j] = s.u[slot * dp + j];
      r_out[i * d + j] = s.r[slot * dp + j];
    }
    iterations[i] = count;
  };

  int64_t live = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = live;
    s.row[slot] = i;
    for (int64_t k = 0; k < K; ++k) {
      const T* ar = saved_a + k * layer_stride + i * H;
      const T* sr = saved_s + k * layer_stride + i * H;
      T* d1r = s.d1 + (k * n + slot) * hp;
      T* cr = s.c + (k * n + slot) * hp;
#pragma omp simd
      for (int64_t h = 0; h < H; ++h) {
        const math::SoftplusParts<T> f = math::softplus_parts(ar[h]);
        d1r[h] = f.d1;
        cr[h] = sr[h] * f.d2;
      }
      for (int64_t h = H; h < hp; ++h) d1r[h] = cr[h] = T(0);
    }
    T rr = 0;
    for (int64_t j = 0; j < dp; ++j) {
      const T value = j < d ? v[i * d + j] : T(0);
      s.p[slot * dp + j] = s.r[slot * dp + j] = value;
      s.u[slot * dp + j] = T(0);
      rr += value * value;
    }
    s.rr[slot] = rr;
    if (converged(s.r + slot * dp, d, tol)) {
      finish(slot, 0);
    } else {
      ++live;
    }
  }

  for (int64_t it = 1; it <= max_iter && live > 0; ++it) {
    hessian_vector(pk, s, live);
    for (int64_t slot = 0; slot < live;) {
      T* p = s.p + slot * dp;
      T* q = s.hp_ + slot * dp;
      T* u = s.u + slot * dp;
      T* r = s.r + slot * dp;
      T curvature = 0;
      for (int64_t j = 0; j < d; ++j) curvature += p[j] * q[j];
      bool done = false;
      if (!(curvature > T(0))) {  // not positive definite (or NaN)
        const T nan = std::numeric_limits<T>::quiet_NaN();
        std::fill_n(u, d, nan);
        std::fill_n(r, d, nan);
        finish(slot, std::isfinite(curvature) ? -1 : -2);
        done = true;
      } else {
        const T step = s.rr[slot] / curvature;
        T rr_next = 0;
        for (int64_t j = 0; j < d; ++j) {
          u[j] += step * p[j];
          r[j] -= step * q[j];
          rr_next += r[j] * r[j];
        }
        if (converged(r, d, tol) || it == max_iter) {
          finish(slot, static_cast<int32_t>(it));
          done = true;
        } else {
          const T beta = rr_next / s.rr[slot];
          for (int64_t j = 0; j < d; ++j) p[j] = r[j] + beta * p[j];
          s.rr[slot] = rr_next;
        }
      }
      if (done) {
        --live;
        if (slot != live) {
          move_slot(s, live, slot);
          // the moved slot's H p must move too: it has not been consumed yet
          std::copy_n(s.hp_ + live * dp, dp, s.hp_ + slot * dp);
        }
      } else {
        ++slot;
      }
    }
  }
}

template <typename T>
IVAE_CLONE_INLINE void solve_rows(const IcnnPacked<T>& pk, int64_t rows, const T* saved_a, const T* saved_s,
                                  int64_t layer_stride, const T* v, T tol, int64_t max_iter, T* u, T* residual,
                                  int32_t* iterations) {
  const int64_t per_row = workspace_per_row<T>(pk.layers, pk.hp, pk.dp);
  const int64_t by_cache = kSubBlockBytes / std::max<int64_t>(per_row * static_cast<int64_t>(sizeof(T)), 1);
  const int64_t block = std::clamp<int64_t>(by_cache / 4 * 4, 4, 256);
  T* ws = thread_workspace<IcnnCgWorkspace, T>(per_row * std::min(block, std::max<int64_t>(rows, 1)));
  const int64_t d = pk.dim, H = pk.hidden;
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    solve_block(pk, n, saved_a + r * H, saved_s + r * H, layer_stride, v + r * d, tol, max_iter, u + r * d,
                residual + r * d, iterations + r, ws);
  }
}

}  // namespace

#define IVAE_ICNN_CG_FOR(T)                                                                                    \
  IVAE_CPU_CLONES void icnn_cg_tiled(const IcnnPacked<T>& p, int64_t rows, const T* saved_a, const T* saved_s, \
                                     int64_t layer_stride, const T* v, T tol, int64_t max_iter, T* u,          \
                                     T* residual, int32_t* iterations) {                                       \
    solve_rows(p, rows, saved_a, saved_s, layer_stride, v, tol, max_iter, u, residual, iterations);            \
  }

IVAE_ICNN_CG_FOR(float)
IVAE_ICNN_CG_FOR(double)

#undef IVAE_ICNN_CG_FOR

}  // namespace ivae::cpu
